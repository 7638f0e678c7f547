"""The storage interface: what the pipeline needs from a bucket or a directory.

Both backends write the same layout, so falling back to local storage runs the same code.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# Every single storage operation's outcome: recorded in training.log only (see pokevq.run.logs), never on the
# console or in the orchestrator's UI, which would drown in one line per frame.
operations = logging.getLogger("pokevq.operations")
operations.propagate = False
operations.setLevel(logging.DEBUG)


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


