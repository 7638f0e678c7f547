"""Frames packed into tar shards with a Parquet index, so a cold cache fills with a few large reads.

`pokevq pack` (or `pack()`) reads every frame under a prefix and writes, next to the frames::

    <prefix>/_shards/<pack id>/shard-00000.tar     # plain POSIX tar files (`tar -xf` works),
    <prefix>/_shards/<pack id>/shard-00001.tar     # about `shard_bytes` each, frames in natural order
    <prefix>/_shards/index.parquet                  # one row per frame, written last

The index has one row per frame: `key` (the frame's own key), `etag` (the frame object's ETag
when it was packed), `size`, `shard` (the shard's key), `offset` and `length` (where the frame's
bytes lie inside the shard). A new pack writes under a new pack id and then replaces the index,
so a reader never pairs an index with shards of another pack; shards of older packs are removed
afterwards.

Readers (`ShardIndex`) use a frame from a shard only when the manifest's ETag for that key is
the one packed: a frame changed since the pack is read from its own object, as is any frame the
index does not know. The frames themselves stay where they are: the manifest still lists them,
the cache still keys on them, and the split by episode is unchanged.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pandas as pd

from pokevq.data.manifest import SHARDS_DIR, _normalize_prefix
from pokevq.errors import FATAL_STORAGE_ERRORS, ObjectNotFoundError, StorageError
from pokevq.storage import Storage

log = logging.getLogger(__name__)

INDEX_NAME = "index.parquet"
INDEX_COLUMNS = ["key", "etag", "size", "shard", "offset", "length"]
# Reading: ranges closer than this are merged into one request; one request reads at most MAX_SPAN bytes.
COALESCE_GAP = 256 * 1024
MAX_SPAN = 8 * 1024 * 1024


def shards_prefix(prefix: str) -> str:
    """Where the shards of a frames prefix live: `<prefix>/_shards/`."""
    return f"{_normalize_prefix(prefix)}{SHARDS_DIR}/"


def index_key(prefix: str) -> str:
    return shards_prefix(prefix) + INDEX_NAME


@dataclass
class Span:
    """One read: bytes [start, end) of a shard, holding `members` (key, etag, offset, length)."""

    shard: str
    start: int
    end: int
    members: list[tuple[str, str, int, int]]


class ShardIndex:
    """Where each packed frame lies: key -> (etag, shard, offset, length)."""

    def __init__(self, prefix: str, frame: pd.DataFrame) -> None:
        self.prefix = _normalize_prefix(prefix)
        self.entries: dict[str, tuple[str, str, int, int]] = {
            key: (str(etag), shard, int(offset), int(length))
            for key, etag, shard, offset, length in zip(
                frame["key"], frame["etag"], frame["shard"], frame["offset"], frame["length"]
            )
        }

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, storage: Storage, prefix: str) -> "ShardIndex | None":
        """The index under `prefix`, or None when the prefix was never packed."""
        try:
            data = storage.get_bytes(index_key(prefix))
        except ObjectNotFoundError:
            return None
        return cls(prefix, pd.read_parquet(io.BytesIO(data), columns=INDEX_COLUMNS))

    @classmethod
    def discover(cls, storage: Storage, keys: Sequence[str]) -> "ShardIndex | None":
        """The index of the nearest packed folder holding all `keys` (their common folder, then its parents)."""
        if not len(keys):
            return None
        common = os.path.commonprefix([min(keys), max(keys)])
        folder = common[: common.rfind("/") + 1]
        while True:
            found = cls.load(storage, folder)
            if found is not None:
                return found
            if not folder:
                return None
            folder = folder[: folder.rstrip("/").rfind("/") + 1]

    def locate(self, key: str, etag: str) -> tuple[str, int, int] | None:
        """(shard, offset, length) of a frame packed with this ETag, else None."""
        entry = self.entries.get(key)
        if entry is None or entry[0] != etag:
            return None
        return entry[1], entry[2], entry[3]

    def plan(
        self, rows: Iterable[tuple[str, str]], *, gap: int = COALESCE_GAP, max_span: int = MAX_SPAN
    ) -> tuple[list[Span], list[tuple[str, str]]]:
        """Group frames into few large reads; returns the reads and the frames to read one by one."""
        located: list[tuple[str, int, int, str, str]] = []
        loose: list[tuple[str, str]] = []
        for key, etag in rows:
            where = self.locate(key, etag)
            if where is None:
                loose.append((key, etag))
            else:
                located.append((where[0], where[1], where[2], key, etag))
        located.sort()
        spans: list[Span] = []
        for shard, offset, length, key, etag in located:
            last = spans[-1] if spans else None
            end = offset + length
            if last is not None and last.shard == shard and offset - last.end <= gap and end - last.start <= max_span:
                last.end = max(last.end, end)
                last.members.append((key, etag, offset, length))
            else:
                spans.append(Span(shard, offset, end, [(key, etag, offset, length)]))
        return spans, loose


def read_spans(
    storage: Storage,
    spans: Sequence[Span],
    deliver: Callable[[str, str, bytes], None],
    *,
    threads: int = 16,
) -> list[tuple[str, str]]:
    """Read spans concurrently and hand each frame to `deliver(key, etag, data)`.

    Returns the frames of spans that could not be read (a shard removed by a newer pack, say),
    for the caller to read from their own objects.
    """
    failed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def read(span: Span) -> None:
        try:
            data = storage.get_range(span.shard, span.start, span.end)
            if len(data) != span.end - span.start:
                raise StorageError(f"short read: {len(data)} of {span.end - span.start} bytes")
        except (ObjectNotFoundError, StorageError) as exc:
            if isinstance(exc, FATAL_STORAGE_ERRORS):
                raise
            log.warning("Shard read %s [%d, %d) failed (%s); reading its frames one by one", span.shard,
                        span.start, span.end, exc)
            with lock:
                failed.extend((key, etag) for key, etag, _, _ in span.members)
            return
        view = memoryview(data)
        for key, etag, offset, length in span.members:
            deliver(key, etag, bytes(view[offset - span.start: offset - span.start + length]))

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-shard") as pool:
        for future in [pool.submit(read, span) for span in spans]:
            future.result()
    return failed
