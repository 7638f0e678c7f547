"""S3 through boto3.

Every S3 failure is translated once, here, into a `PokevqError` whose message says what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pokevq import settings
from pokevq.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigError,
    ConnectError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from pokevq.storage.addresses import check_endpoint_and_region
from pokevq.storage.base import ListingPage, ObjectInfo, Storage, operations
from pokevq.storage.listing import listing_parser_factory

log = logging.getLogger(__name__)

# S3Storage.listing_client per storage object (clients cannot be pickled; this keeps them off the instance).
_LISTING_CLIENTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

# S3 error codes that mean "these keys are wrong", as opposed to "not allowed".
_BAD_KEY_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidClientTokenId"}
_EXPIRED_CODES = {"ExpiredToken", "TokenRefreshRequired"}  # temporary credentials ran out
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_CONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}  # a conditional write lost a race
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


@dataclass(frozen=True)
class S3Credentials:
    """Keys handed over by the orchestrator (a Prefect S3Bucket block), used by this client alone.

    They never enter the process environment, a task result or a log: the secret parts are left
    out of `repr`.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def session_arguments(self) -> dict[str, str | None]:
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key,
                "aws_session_token": self.session_token}


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
        credentials: S3Credentials | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError(
                "s3_bucket (--s3-bucket) is required with --use-s3: pass --s3-bucket or set S3_BUCKET_NAME"
            )
        if sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"s3_sse (--s3-sse) must be one of AES256, aws:kms; got {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ConfigError(f"s3_kms_key_id (--s3-kms-key-id) is only used with --s3-sse aws:kms; got s3_sse={sse!r}")
        check_endpoint_and_region(endpoint_url, region)
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.expected_bucket_owner = expected_bucket_owner
        self.credentials = credentials  # None: boto3's standard chain (environment, profile, role)
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
            max_attempts=max_attempts if max_attempts is not None else settings.s3_max_attempts(),
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

    def _session_keys(self) -> dict[str, str | None]:
        return self.credentials.session_arguments() if self.credentials else {}

    @property
    def session(self) -> Any:
        if self._session_obj is None:
            import boto3

            self._session_obj = boto3.session.Session(region_name=self.region, **self._session_keys())
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
                    retries={"mode": "adaptive", "total_max_attempts": opts["max_attempts"]},  # the first one included
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
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

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
            return self._translate_client_error(exc, operation, key, target)
        return StorageError(f"S3 {operation} of {self.uri(key)} failed: {type(exc).__name__}: {exc}")

    def _translate_client_error(self, exc: Any, operation: str, key: str, target: str) -> Exception:
        """An error S3 answered (a botocore ClientError), by its code and HTTP status."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = error.get("Message") or code
        if code in _EXPIRED_CODES:
            return InvalidCredentialsError(
                f"AWS credentials expired (access key {_key_id_hint(self.session)}): {code} during {operation} "
                f"of {target}. Renew them (a new session token, `aws sso login`, or an IAM role, which renews "
                "itself), then retry the flow run or resume from checkpoint_latest.pt: what was uploaded is kept."
            )
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
                f"Check bucket permissions and AWS credentials (the minimal IAM policy: docs/storage.md){owner}."
            )
        if code in _CONDITION_CODES or status == 412:
            return PreconditionFailedError(
                f"S3 {operation} of {self.uri(key)} refused: the object changed under this writer ({code})"
            )
        if code in _MISSING_KEY_CODES or status == 404:
            return ObjectNotFoundError(f"Object not found: {self.uri(key)}")
        if isinstance(status, int) and status >= 500:  # retried by botocore (503 SlowDown too), in vain
            attempts = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0) + 1
            named = f" {code}" if code and code != str(status) else ""
            return StorageError(
                f"S3 answered HTTP {status}{named} ({message}) to {operation} of {self.uri(key)}, after "
                f"{attempts} attempts: the S3 service is failing; try again later (POKEVQ_S3_MAX_ATTEMPTS sets "
                "the attempts)"
            )
        return StorageError(f"S3 {operation} of {self.uri(key)} failed: {code}: {message}")

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
        return self._get_object(key)[0]

    def _get_object(self, key: str) -> tuple[bytes, Any]:
        """The whole body and the GetObject response (its ETag) of one request that read it all."""
        for attempt in range(1, 4):  # a connection broken mid-body is retried, as s3transfer does for downloads
            response = self._call("get_object", key, Key=key)
            try:
                return response["Body"].read(), response
            except Exception as exc:
                from botocore.exceptions import (
                    IncompleteReadError,
                    ResponseStreamingError,
                )

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
            last_modified=response.get("LastModified") or datetime.now(UTC),
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
                        last_modified=item.get("LastModified") or datetime.now(UTC),
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
        more than the request itself) and pages are read by `listing_parser_factory`.
        Kept outside the instance so pickling is unchanged.
        """
        config = self.client.meta.config
        with self._lock:
            listing = _LISTING_CLIENTS.get(self)
            if listing is None:
                import boto3

                session = boto3.session.Session(region_name=self.region, **self._session_keys())
                session._session.register_component("response_parser_factory", listing_parser_factory())
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

    def presigned_url(self, key: str, expires_in: int = 3600) -> str:
        """A URL that reads `key` without credentials until it expires (for a browser, e.g. the Prefect UI)."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key, **self._owner_args}, ExpiresIn=expires_in
        )

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        for attempt in range(1, 4):  # a body cut mid-way is read again, as get_bytes does
            response = self._call("get_object", key, Key=key, Range=f"bytes={start}-{end - 1}")
            try:
                data = response["Body"].read()
            except Exception as exc:
                from botocore.exceptions import (
                    IncompleteReadError,
                    ResponseStreamingError,
                )

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

    # -- conditional writes: If-None-Match / If-Match on PutObject and DeleteObject, the ETag as the token ------
    # AWS S3 evaluates these atomically, but S3-compatible stores may ignore them and moto checks them
    # apart from the write, so `atomic_conditions` stays False: a caller that must not lose a race (the
    # lease) re-reads after writing.
    atomic_conditions = False

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """One GetObject: the body and the ETag of that same version."""
        data, response = self._get_object(key)
        return data, str(response.get("ETag", ""))

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """PutObject with `If-None-Match: *`; 412 (or 409, a concurrent write) is `PreconditionFailedError`."""
        response = self._conditionally("put_object", key, Key=key, Body=data, Metadata=metadata or {},
                                       IfNoneMatch="*", **self._write_args)
        return str(response.get("ETag", ""))

    def put_if_match(self, key: str, data: bytes, token: str, metadata: dict[str, str] | None = None) -> str:
        """PutObject with `If-Match: <etag>`; a changed (412) or deleted (404) object is `PreconditionFailedError`."""
        response = self._conditionally("put_object", key, Key=key, Body=data, Metadata=metadata or {},
                                       IfMatch=token, **self._write_args)
        return str(response.get("ETag", ""))

    def delete_if_match(self, key: str, token: str) -> bool:
        """DeleteObject with `If-Match: <etag>` (needs s3:GetObject besides s3:DeleteObject)."""
        try:
            self._conditionally("delete_object", key, Key=key, IfMatch=token)
        except PreconditionFailedError:
            return False
        return True

    def _conditionally(self, operation: str, key: str, **kwargs: Any) -> Any:
        """`_call` for a conditional request: every way of losing the condition is `PreconditionFailedError`."""
        try:
            return self._call(operation, key, **kwargs)
        except ObjectNotFoundError as exc:  # If-Match on an object deleted in between
            raise PreconditionFailedError(f"{self.uri(key)} is gone") from exc
        except PreconditionFailedError:
            raise
        except StorageError as exc:
            response = getattr(exc.__cause__, "response", None) or {}
            if response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 409:  # a concurrent write won
                raise PreconditionFailedError(
                    f"S3 {operation} of {self.uri(key)} refused: another writer changed it at the same time"
                ) from exc
            raise

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



# Client settings for checks that must answer within seconds even when the endpoint is down.
# 4 attempts: a refused connection still fails within seconds, and a throttled (503 SlowDown) check
# is retried instead of failing validation (or sending the run to local storage).
FAST_FAIL = dict(connect_timeout=3.0, read_timeout=5.0, max_attempts=4)

