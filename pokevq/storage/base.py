"""The storage interface: what the pipeline needs from a bucket or a directory.

Both backends write the same layout, so falling back to local storage runs the same code.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pokevq.errors import ObjectNotFoundError, PreconditionFailedError

# Every single storage operation's outcome: recorded in training.log only (see pokevq.run.logs), never on the
# console or in the orchestrator's UI, which would drown in one line per frame.
operations = logging.getLogger("pokevq.operations")
operations.propagate = False
operations.setLevel(logging.DEBUG)


def content_token(data: bytes) -> str:
    """A version token from the bytes themselves (identical bytes are the same version)."""
    return hashlib.sha256(data).hexdigest()


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

    # -- conditional writes: what lets two writers share one object (the experiment's lease) ----------
    # A token names one version of an object: the ETag on S3 (an MD5 of the bytes, opaque under
    # SSE-KMS), a SHA-256 of the bytes elsewhere. Writing different bytes always changes the token;
    # writing back identical bytes may give the same token again (callers that need every write to
    # differ put a time or a counter in the bytes, as the lease does). A write conditioned on a
    # token, or on absence, fails with `PreconditionFailedError` when another writer got there first
    # (never worth a retry as such: read again, then decide). The defaults below read, compare and
    # write, so they are not atomic; `atomic_conditions` says whether a backend's own versions settle
    # races between writers by themselves (True), or whether a caller that must not lose one should
    # re-read after writing (False).
    atomic_conditions = False

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the token of that same version, read together; `ObjectNotFoundError` when absent."""
        data = self.get_bytes(key)
        return data, content_token(data)

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """Create `key` only if no object is there; returns the new version's token.

        `PreconditionFailedError` when an object exists (whoever created it first wins).
        """
        if self.exists(key):
            raise PreconditionFailedError(f"{self.uri(key)} already exists")
        self.put_bytes(key, data, metadata)
        return content_token(data)

    def put_if_match(self, key: str, data: bytes, token: str, metadata: dict[str, str] | None = None) -> str:
        """Replace `key` only if its current version is `token`; returns the new version's token.

        `PreconditionFailedError` when the object changed since `token` was read, or is gone.
        """
        self._check_token(key, token)
        self.put_bytes(key, data, metadata)
        return content_token(data)

    def delete_if_match(self, key: str, token: str) -> bool:
        """Delete `key` if its current version is `token`; False when it changed or is gone."""
        try:
            self._check_token(key, token)
        except PreconditionFailedError:
            return False
        self.delete(key)
        return True

    def _check_token(self, key: str, token: str) -> None:
        try:
            _, current = self.get_with_token(key)
        except ObjectNotFoundError:
            raise PreconditionFailedError(f"{self.uri(key)} is gone") from None
        if current != token:
            raise PreconditionFailedError(f"{self.uri(key)} changed since it was read")

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


