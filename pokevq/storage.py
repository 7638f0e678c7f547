"""One storage interface, two backends: S3 (boto3) and a local directory.

Both write the same layout, so falling back to local storage runs the same code.
Every S3 failure is translated once, here, into a `PokevqError` whose message
starts with the guide's wording and says what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import urlparse

from pokevq.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigError,
    ConnectError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    StorageError,
)

log = logging.getLogger(__name__)
# Every single S3 operation's outcome: recorded in training.log only (see pokevq.logs), never on the
# console or in the orchestrator's UI, which would drown in one line per frame.
operations = logging.getLogger("pokevq.operations")
operations.propagate = False
operations.setLevel(logging.DEBUG)

# S3 error codes that mean "these keys are wrong", as opposed to "not allowed".
_BAD_KEY_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
# What each client method needs in IAM terms, for "Access denied … s3:PutObject on key".
_IAM_ACTION = {
    "put_object": "s3:PutObject",
    "upload_file": "s3:PutObject",
    "copy_object": "s3:PutObject",
    "get_object": "s3:GetObject",
    "download_file": "s3:GetObject",
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",
    "head_bucket": "s3:ListBucket",
    "delete_object": "s3:DeleteObject",
}


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: what the manifest and the cache need."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    metadata: dict[str, str] | None = None  # user metadata (`x-amz-meta-*`), filled by S3Storage.head only


@dataclass
class ListingPage:
    """One page of a listing, column by column (cheap to turn into arrays; no object per key kept).

    `last_modified` holds S3's ISO 8601 strings unparsed (parsing 1,000 timestamps costs more than
    the request) or datetimes from local storage. `prefixes` are the common prefixes ("folders")
    when the listing used a delimiter.
    """

    keys: list[str]
    sizes: list[int]
    etags: list[str]
    last_modified: list[Any]
    prefixes: list[str]


class Storage(ABC):
    """Keys are POSIX-style relative paths (`checkpoints/exp/checkpoint_latest.pt`)."""

    kind: str

    @property
    @abstractmethod
    def namespace(self) -> str:
        """Identifies the store itself (`s3://bucket` or a directory); the cache keys on it."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where a key lives, in a form the user can paste (`s3://…` or a path)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of a key, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under a prefix, paginated; keys relative to the store's root."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def upload_file(self, path: str | Path, key: str, metadata: dict[str, str] | None = None) -> None: ...

    @abstractmethod
    def download_file(self, key: str, path: str | Path) -> None:
        """Download atomically: `path` holds either the whole object or nothing new."""

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None:
        """Copy within the store (server-side on S3): how `latest`/`best` are replaced."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def describe(self) -> str:
        return self.namespace

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object (a frame inside a shard); generic fallback reads it whole."""
        return self.get_bytes(key)[start:end]

    def list_pages(self, prefix: str = "", delimiter: str | None = None) -> Iterator[ListingPage]:
        """A listing page by page; with a delimiter, keys below the next delimiter come back as prefixes."""
        page = ListingPage([], [], [], [], [])
        seen: set[str] = set()
        for info in self.list(prefix):
            rest = info.key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in seen:
                    seen.add(common)
                    page.prefixes.append(common)
                continue
            page.keys.append(info.key)
            page.sizes.append(info.size)
            page.etags.append(info.etag)
            page.last_modified.append(info.last_modified)
            if len(page.keys) >= 1000:
                yield page
                page = ListingPage([], [], [], [], [])
        yield page


# ---------------------------------------------------------------------------- S3


# S3Storage.listing_client per storage object (clients cannot be pickled; this keeps them off the instance).
_LISTING_CLIENTS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _listing_parser_factory() -> Any:
    """botocore's response parsers, except that ListObjectsV2 bodies are read with ElementTree directly.

    botocore walks its shape model for every element of every key (about 30 ms of CPU per page
    of 1,000 keys, several times the request's own latency); this reads the same fields in a few
    ms. Timestamps stay strings. Errors, headers and metadata are still botocore's own parsing.
    """
    from xml.etree import ElementTree

    from botocore.parsers import PROTOCOL_PARSERS, ResponseParserFactory, RestXMLParser

    class ListingParser(RestXMLParser):
        def _parse_payload(self, response: Any, shape: Any, member_shapes: Any, final_parsed: dict) -> None:
            if getattr(shape, "name", None) != "ListObjectsV2Output" or not response.get("body"):
                return super()._parse_payload(response, shape, member_shapes, final_parsed)
            root = ElementTree.fromstring(response["body"])
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for child in root:
                tag = child.tag[len(ns):]
                if tag == "Contents":
                    item: dict[str, Any] = {}
                    for field in child:
                        name = field.tag[len(ns):]
                        if name == "Size":
                            item[name] = int(field.text or 0)
                        elif name in ("Key", "LastModified", "ETag", "StorageClass"):
                            item[name] = field.text or ""
                    final_parsed.setdefault("Contents", []).append(item)
                elif tag == "CommonPrefixes":
                    final_parsed.setdefault("CommonPrefixes", []).append({"Prefix": child.findtext(f"{ns}Prefix") or ""})
                elif tag == "IsTruncated":
                    final_parsed[tag] = (child.text or "").strip().lower() == "true"
                elif tag in ("MaxKeys", "KeyCount"):
                    final_parsed[tag] = int(child.text or 0)
                elif tag in ("Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken",
                             "NextContinuationToken", "StartAfter"):
                    final_parsed[tag] = child.text or ""

    class Factory(ResponseParserFactory):
        def create_parser(self, protocol_name: str) -> Any:
            if PROTOCOL_PARSERS.get(protocol_name) is RestXMLParser:
                return ListingParser(**self._defaults)
            return super().create_parser(protocol_name)

    factory = Factory()
    factory.set_parser_defaults(timestamp_parser=str)
    return factory


# Attempts per S3 request (botocore adaptive retries) unless a caller sets max_attempts.
MAX_ATTEMPTS_ENV = "POKEVQ_S3_MAX_ATTEMPTS"


def default_max_attempts() -> int:
    """`$POKEVQ_S3_MAX_ATTEMPTS` (1-50), else 8: how long a client keeps retrying a failing request."""
    value = os.environ.get(MAX_ATTEMPTS_ENV, "").strip()
    if not value:
        return 8
    if not value.isdigit() or not 1 <= int(value) <= 50:
        raise ConfigError(f"{MAX_ATTEMPTS_ENV} must be an integer from 1 to 50; got {value!r}")
    return int(value)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key); refuse anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _key_id_hint(session: Any) -> str:
    """Last four characters of the access key id: enough to tell keys apart, never a secret."""
    try:
        credentials = session.get_credentials()
        key_id = credentials.access_key if credentials else ""
    except Exception:  # noqa: BLE001 - only a hint for a message
        key_id = ""
    return f"…{key_id[-4:]}" if key_id else "unknown key"


class S3Storage(Storage):
    """S3 through boto3: standard credential chain, adaptive retries, managed transfers."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int | None = None,
        max_pool_connections: int = 64,
        sse: str | None = None,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError(
                "s3_bucket (--s3-bucket) is required with --use-s3: pass --s3-bucket or set S3_BUCKET_NAME"
            )
        if sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"s3_sse (--s3-sse) must be one of AES256, aws:kms; got {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ConfigError(f"s3_kms_key_id (--s3-kms-key-id) is only used with --s3-sse aws:kms; got s3_sse={sse!r}")
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.expected_bucket_owner = expected_bucket_owner
        # Sent with every request (AWS refuses it with 403 when another account owns the bucket)...
        self._owner_args: dict[str, str] = (
            {"ExpectedBucketOwner": expected_bucket_owner} if expected_bucket_owner else {}
        )
        # ...and with every write: explicit, so a copy never silently loses its encryption.
        self._write_args: dict[str, str] = {}
        if sse:
            self._write_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self._write_args["SSEKMSKeyId"] = kms_key_id
        self._client_options = dict(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts if max_attempts is not None else default_max_attempts(),
            max_pool_connections=max_pool_connections,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._client_obj: Any = None
        self._session_obj: Any = None

    # boto3 clients are not picklable; DataLoader workers build their own.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client_obj=None, _session_obj=None, _lock=None, _local=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def session(self) -> Any:
        if self._session_obj is None:
            import boto3

            self._session_obj = boto3.session.Session(region_name=self.region)
        return self._session_obj

    @property
    def client(self) -> Any:
        """One client per storage, shared by threads (boto3 clients are thread-safe)."""
        with self._lock:
            if self._client_obj is None:
                from botocore.config import Config

                opts = self._client_options
                config = Config(
                    region_name=self.region,
                    connect_timeout=opts["connect_timeout"],
                    read_timeout=opts["read_timeout"],
                    retries={"mode": "adaptive", "max_attempts": opts["max_attempts"]},
                    max_pool_connections=opts["max_pool_connections"],
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                self._client_obj = self.session.client("s3", endpoint_url=self.endpoint_url, config=config)
            return self._client_obj

    @property
    def namespace(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def endpoint_display(self) -> str:
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def describe(self) -> str:
        where = f" via {self.endpoint_url}" if self.endpoint_url else f" in {self.region}"
        return f"s3://{self.bucket}{where}"

    def check_credentials(self) -> None:
        """Fail early and clearly when boto3's chain finds no credentials at all."""
        try:
            found = self.session.get_credentials()
        except Exception as exc:  # noqa: BLE001 - a broken profile is also "not found"
            raise CredentialsNotFoundError(f"AWS credentials not found ({exc}). {_CREDENTIALS_HELP}") from exc
        if found is None:
            raise CredentialsNotFoundError(f"AWS credentials not found. {_CREDENTIALS_HELP}")

    # -- error translation -----------------------------------------------------------
    def translate(self, exc: Exception, operation: str, key: str = "") -> Exception:
        """Turn a botocore exception into the user-facing error for it."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from boto3.exceptions import S3UploadFailedError

        target = f"{key}" if key else "the bucket"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return CredentialsNotFoundError(f"AWS credentials not found ({exc}). {_CREDENTIALS_HELP}")
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)):
            return ConnectError(
                f"Unable to connect to S3 at {self.endpoint_display} ({type(exc).__name__} during "
                f"{operation} of {target}): check your internet connection, the endpoint URL and the AWS region."
            )
        if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
            inner = exc.__context__
            if isinstance(inner, Exception):
                return self.translate(inner, operation, key)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = error.get("Message") or code
            if code in _BAD_KEY_CODES:
                return InvalidCredentialsError(
                    f"AWS credentials are invalid (access key {_key_id_hint(self.session)}): {code}. "
                    "Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or your AWS profile."
                )
            if code in _MISSING_BUCKET_CODES or (operation == "head_bucket" and status == 404):
                return BucketNotFoundError(
                    f"S3 bucket {self.bucket} does not exist at {self.endpoint_display}: create it "
                    f"(aws s3 mb s3://{self.bucket}) or check --s3-bucket and --s3-region."
                )
            if code in _DENIED_CODES or status == 403:
                action = _IAM_ACTION.get(operation, operation)
                owner = (
                    f", and that account {self.expected_bucket_owner} (--expected-bucket-owner) owns the bucket"
                    if self.expected_bucket_owner
                    else ""
                )
                return AccessDeniedError(
                    f"Access denied to S3 bucket {self.bucket}: {action} on {target}. "
                    f"Check bucket permissions and AWS credentials (see the IAM policy in the README){owner}."
                )
            if code in _MISSING_KEY_CODES or status == 404:
                return ObjectNotFoundError(f"Object not found: {self.uri(key)}")
            return StorageError(f"S3 {operation} of {self.uri(key)} failed: {code}: {message}")
        return StorageError(f"S3 {operation} of {self.uri(key)} failed: {type(exc).__name__}: {exc}")

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        try:
            result = getattr(self.client, operation)(Bucket=self.bucket, **self._owner_args, **kwargs)
        except Exception as exc:
            error = self.translate(exc, operation, key)
            operations.info("S3 %s s3://%s/%s failed: %s", operation, self.bucket, key, error)
            raise error from exc
        operations.info("S3 %s s3://%s/%s ok", operation, self.bucket, key)
        return result

    # -- the interface ----------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._call("put_object", key, Key=key, Body=data, Metadata=metadata or {}, **self._write_args)

    def get_bytes(self, key: str) -> bytes:
        for attempt in range(1, 4):  # a connection broken mid-body is retried, as s3transfer does for downloads
            response = self._call("get_object", key, Key=key)
            try:
                return response["Body"].read()
            except Exception as exc:
                from botocore.exceptions import IncompleteReadError, ResponseStreamingError

                if attempt < 3 and isinstance(exc, (ResponseStreamingError, IncompleteReadError, ConnectionError)):
                    operations.info("S3 get_object s3://%s/%s broken mid-body (%s); retrying", self.bucket, key, exc)
                    continue
                raise self.translate(exc, "get_object", key) from exc
        raise AssertionError("unreachable")

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self._call("head_object", key, Key=key)
        except ObjectNotFoundError:
            return None
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified") or datetime.now(timezone.utc),
            metadata=dict(response.get("Metadata") or {}),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **self._owner_args):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified") or datetime.now(timezone.utc),
                    )
        except Exception as exc:
            raise self.translate(exc, "list_objects_v2", prefix) from exc

    def list_one(self, prefix: str) -> list[str]:
        """Up to one key under a prefix: checks s3:ListBucket as AWS and moto both answer it."""
        response = self._call("list_objects_v2", prefix, Prefix=prefix, MaxKeys=1)
        return [item["Key"] for item in response.get("Contents", [])]

    @property
    def listing_client(self) -> Any:
        """A client configured like `client` for bulk listings: its ListObjectsV2 parsing is cheap.

        Timestamps stay strings (botocore parses each LastModified with dateutil, which costs
        more than the request itself) and pages are read by `_listing_parser_factory`.
        Kept outside the instance so pickling is unchanged.
        """
        config = self.client.meta.config
        with self._lock:
            listing = _LISTING_CLIENTS.get(self)
            if listing is None:
                import boto3

                session = boto3.session.Session(region_name=self.region)
                session._session.register_component("response_parser_factory", _listing_parser_factory())
                listing = session.client("s3", endpoint_url=self.endpoint_url, config=config)
                _LISTING_CLIENTS[self] = listing
            return listing

    def list_pages(self, prefix: str = "", delimiter: str | None = None) -> Iterator[ListingPage]:
        paginator = self.listing_client.get_paginator("list_objects_v2")
        extra: dict[str, Any] = {"Delimiter": delimiter} if delimiter else {}
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra, **self._owner_args):
                contents = page.get("Contents", [])
                yield ListingPage(
                    keys=[item["Key"] for item in contents],
                    sizes=[int(item.get("Size", 0)) for item in contents],
                    etags=[str(item.get("ETag", "")).strip('"') for item in contents],
                    last_modified=[item.get("LastModified") for item in contents],
                    prefixes=[item["Prefix"] for item in page.get("CommonPrefixes", [])],
                )
        except Exception as exc:
            raise self.translate(exc, "list_objects_v2", prefix) from exc
        operations.info("S3 list_objects_v2 s3://%s/%s ok", self.bucket, prefix)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        for attempt in range(1, 4):  # a body cut mid-way is read again, as get_bytes does
            response = self._call("get_object", key, Key=key, Range=f"bytes={start}-{end - 1}")
            try:
                data = response["Body"].read()
            except Exception as exc:
                from botocore.exceptions import IncompleteReadError, ResponseStreamingError

                if attempt < 3 and isinstance(exc, (ResponseStreamingError, IncompleteReadError, ConnectionError)):
                    operations.info("S3 ranged get_object s3://%s/%s broken mid-body (%s); retrying", self.bucket,
                                    key, exc)
                    continue
                raise self.translate(exc, "get_object", key) from exc
            expected = min(end, start + int(response.get("ContentLength", end - start))) - start
            if len(data) < expected and attempt < 3:
                operations.info("S3 ranged get_object s3://%s/%s returned %d of %d bytes; retrying", self.bucket,
                                key, len(data), expected)
                continue
            return data
        raise AssertionError("unreachable")

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=key)

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)

    def upload_file(self, path: str | Path, key: str, metadata: dict[str, str] | None = None) -> None:
        extra: dict[str, Any] = {**self._owner_args, **self._write_args}
        if metadata:
            extra["Metadata"] = metadata
        try:
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra or None, Config=self._transfer_config()
            )
        except Exception as exc:
            error = self.translate(exc, "upload_file", key)
            operations.info("S3 upload %s -> %s failed: %s", path, self.uri(key), error)
            raise error from exc
        operations.info("S3 upload %s -> %s ok (%d bytes)", Path(path).name, self.uri(key), Path(path).stat().st_size)

    def download_file(self, key: str, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            self.client.download_file(
                self.bucket, key, tmp, ExtraArgs=dict(self._owner_args) or None, Config=self._transfer_config()
            )
            os.replace(tmp, path)
        except Exception as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError) and not hasattr(exc, "response"):
                raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
            error = self.translate(exc, "download_file", key)
            operations.info("S3 download %s failed: %s", self.uri(key), error)
            raise error from exc
        operations.info("S3 download %s -> %s ok", self.uri(key), path)

    def copy(self, src_key: str, dst_key: str) -> None:
        source_owner = {"ExpectedSourceBucketOwner": self.expected_bucket_owner} if self.expected_bucket_owner else {}
        self._call(
            "copy_object",
            dst_key,
            Key=dst_key,
            CopySource={"Bucket": self.bucket, "Key": src_key},
            **source_owner,
            **self._write_args,
        )
        operations.info("S3 copy %s -> %s ok", self.uri(src_key), self.uri(dst_key))


_CREDENTIALS_HELP = (
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `aws configure`, or attach an IAM role with S3 access."
)


# ------------------------------------------------------------------------- local


def _safe_relative(key: str) -> PurePosixPath:
    """A key (or a prefix ending in '/', or '' for the root) as a relative path that cannot climb out."""
    path = PurePosixPath(key.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise StorageError(f"Refusing unsafe storage key {key!r}: keys must be relative paths without '..'")
    return path


class LocalStorage(Storage):
    """A directory that mirrors the S3 layout: the fallback and the non-S3 mode."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def namespace(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_safe_relative(key).parts)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def _write_atomic(self, target: Path, write: Any) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        except OSError as exc:
            raise StorageError(f"Cannot write {target}: {exc.strerror or exc}. Check free space and permissions.") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"Cannot write {target}: {exc.strerror or exc}. Check free space and permissions.") from exc

    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._write_atomic(self.path(key), lambda handle: handle.write(data))
        operations.info("local put %s ok (%d bytes)", key, len(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"Object not found: {self.uri(key)}") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read {self.uri(key)}: {exc.strerror or exc}") from exc

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return _local_info(key, stat)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.endswith(".part"):
                    try:
                        yield _local_info(key, full.stat())
                    except FileNotFoundError:
                        continue

    def get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self.path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(max(0, end - start))
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"Object not found: {self.uri(key)}") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read {self.uri(key)}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def upload_file(self, path: str | Path, key: str, metadata: dict[str, str] | None = None) -> None:
        target = self.path(key)
        if Path(path).resolve() == target:
            return

        def write(handle: Any) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 1024 * 1024)

        self._write_atomic(target, write)
        operations.info("local copy %s -> %s ok", Path(path).name, target)

    def download_file(self, key: str, path: str | Path) -> None:
        source = self.path(key)
        if not source.is_file():
            raise ObjectNotFoundError(f"Object not found: {source}")
        path = Path(path)
        if path.resolve() == source:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc

    def copy(self, src_key: str, dst_key: str) -> None:
        source = self.path(src_key)
        if not source.is_file():
            raise ObjectNotFoundError(f"Object not found: {source}")
        self.upload_file(source, dst_key)


def _local_info(key: str, stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=stat.st_size,
        etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
        last_modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
    )


# Client settings for checks that must answer within seconds even when the endpoint is down.
# 4 attempts: a refused connection still fails within seconds, and a throttled (503 SlowDown) check
# is retried instead of failing validation (or sending the run to local storage).
FAST_FAIL = dict(connect_timeout=3.0, read_timeout=5.0, max_attempts=4)


def storage_for_uri(
    uri: str, *, region: str = "us-east-1", endpoint_url: str | None = None, **client_options: Any
) -> tuple[Storage, str]:
    """The store and key an `s3://…` URI or a local path points at (used by --resume)."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ConfigError(f"S3 URI names no object: {uri!r}")
        return S3Storage(bucket, region=region, endpoint_url=endpoint_url, **client_options), key
    path = Path(uri).expanduser().resolve()
    return LocalStorage(path.parent), path.name
