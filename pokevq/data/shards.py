"""Frames packed into tar shards with a Parquet index, so a cold cache fills with a few large reads.

`pokevq pack` (or `pack()`) reads every frame under a prefix and writes, next to the frames::

    <prefix>/_shards/<pack id>/shard-00000.tar     # plain POSIX tar files (`tar -xf` works),
    <prefix>/_shards/<pack id>/shard-00001.tar     # about `shard_bytes` each, frames in natural order,
    <prefix>/_shards/index.parquet                  # each decoded once (`record`); the index written last

The index has one row per frame: `key` (the frame's own key), `etag` (the frame object's ETag
when it was packed), `size` (the frame object's), `shard` (the shard's key), `offset` and `length`
(where the packed frame lies inside the shard; shards of older packs hold the PNG itself). A new
pack writes under a new pack id and then replaces the index, so a reader never pairs an index with
shards of another pack; shards of older packs are removed afterwards.

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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pokevq.data.manifest import SHARDS_DIR, _normalize_prefix
from pokevq.errors import (
    FATAL_STORAGE_ERRORS,
    ObjectNotFoundError,
    PokevqError,
    StorageError,
)
from pokevq.storage import Storage

log = logging.getLogger(__name__)

SHARD_INDEX_NAME = "index.parquet"
INDEX_COLUMNS = ["key", "etag", "size", "shard", "offset", "length"]
# Reading: ranges closer than this are merged into one request; one request reads at most MAX_SPAN bytes.
COALESCE_GAP = 256 * 1024
MAX_SPAN = 8 * 1024 * 1024


def shards_prefix(prefix: str) -> str:
    """Where the shards of a frames prefix live: `<prefix>/_shards/`."""
    return f"{_normalize_prefix(prefix)}{SHARDS_DIR}/"


def index_key(prefix: str) -> str:
    return shards_prefix(prefix) + SHARD_INDEX_NAME


class ShardIndexError(PokevqError):
    """The shard index is corrupt or hostile; packing again rewrites it."""


@dataclass
class Located:
    """Per frame: its shard id (-1: read from its own object), offset and length; per shard: name and size."""

    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    shard_names: list[str]
    shard_sizes: np.ndarray


_MAX_OFFSET = 1 << 40  # 1 TiB: no shard is larger


def _check_rows(frame: pd.DataFrame, shards_dir: str, uri: str) -> None:
    def fail(row: int, reason: str) -> None:
        raise ShardIndexError(f"Shard index {uri} is corrupt or hostile (row {row}: {reason}): "
                              "run `pokevq pack` on the frames again to rewrite it")

    if not len(frame):
        return
    try:
        offsets = frame["offset"].to_numpy(dtype=np.int64)
        lengths = frame["length"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ShardIndexError(f"Shard index {uri} is corrupt (offsets or lengths are not integers): "
                              "run `pokevq pack` on the frames again to rewrite it") from exc
    bad = np.flatnonzero((offsets < 0) | (lengths < 0) | (offsets + lengths > _MAX_OFFSET))
    if len(bad):
        fail(int(bad[0]), f"offset {offsets[bad[0]]} length {lengths[bad[0]]} is outside any shard")
    for column in ("key", "shard"):
        values = frame[column].astype(str)
        escapes = values.str.contains(r"(?:^|/)\.\.(?:/|$)", regex=True) | values.str.startswith("/")
        if escapes.any():
            row = int(np.flatnonzero(escapes.to_numpy())[0])
            fail(row, f"{column} {values.iloc[row]!r} climbs out of its folder")
    outside = ~frame["shard"].astype(str).str.startswith(shards_dir)
    if outside.any():
        row = int(np.flatnonzero(outside.to_numpy())[0])
        fail(row, f"shard {frame['shard'].iloc[row]!r} is not under {shards_dir}")


@dataclass
class Span:
    """One read: bytes [start, end) of a shard, holding `members` (key, etag, offset, length)."""

    shard: str
    start: int
    end: int
    members: list[tuple[str, str, int, int]]


class ShardIndex:
    """Where each packed frame lies: key -> (etag, shard, offset, length).

    Rows are checked when the index is read: a row that points outside its pack (a `..` in a key
    or shard, a shard outside `_shards/`, a negative or absurd offset) makes the whole index
    unusable with a `ShardIndexError` that says to pack again.
    """

    def __init__(self, prefix: str, frame: pd.DataFrame, uri: str = "") -> None:
        self.prefix = _normalize_prefix(prefix)
        self.uri = uri or index_key(self.prefix)
        _check_rows(frame, shards_prefix(self.prefix), self.uri)
        self.frame = frame
        self._entries: dict[str, tuple[str, str, int, int]] | None = None

    @property
    def entries(self) -> dict[str, tuple[str, str, int, int]]:
        if self._entries is None:
            frame = self.frame
            self._entries = {
                key: (str(etag), shard, int(offset), int(length))
                for key, etag, shard, offset, length in zip(
                    frame["key"], frame["etag"], frame["shard"], frame["offset"], frame["length"]
                )
            }
        return self._entries

    def locate_all(self, keys: Sequence[str], etags: Sequence[str]) -> Located:
        """Every frame's shard (or -1 when it must be read from its own object), vectorised for big manifests."""
        rows = pd.DataFrame({"key": pd.Series(keys, dtype=object), "etag": pd.Series(etags, dtype=object).astype(str),
                             "_row": np.arange(len(keys), dtype=np.int64)})
        index = self.frame[["key", "etag", "shard", "offset", "length"]]
        index = index.assign(etag=index["etag"].astype(str))
        merged = rows.merge(index, on=["key", "etag"], how="left", sort=False)
        merged = merged.drop_duplicates("_row").sort_values("_row")
        codes, names = pd.factorize(merged["shard"], use_na_sentinel=True)
        offsets = merged["offset"].fillna(0).to_numpy(dtype=np.int64)
        lengths = merged["length"].fillna(0).to_numpy(dtype=np.int64)
        # A shard is read up to its last packed frame (the tar's end blocks are never needed).
        ends = self.frame.assign(end=self.frame["offset"].astype(np.int64) + self.frame["length"].astype(np.int64))
        sizes = ends.groupby("shard")["end"].max()
        return Located(np.asarray(codes, dtype=np.int32), offsets, lengths, [str(n) for n in names],
                       np.array([int(sizes[n]) for n in names], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, storage: Storage, prefix: str) -> ShardIndex | None:
        """The index under `prefix`, or None when the prefix was never packed."""
        try:
            data = storage.get_bytes(index_key(prefix))
        except ObjectNotFoundError:
            return None
        try:
            frame = pd.read_parquet(io.BytesIO(data), columns=INDEX_COLUMNS)
        except Exception as exc:  # noqa: BLE001 - any unreadable index is the same problem for the user
            raise ShardIndexError(f"Shard index {storage.uri(index_key(prefix))} is unreadable ({type(exc).__name__}): "
                                  "run `pokevq pack` on the frames again to rewrite it") from exc
        return cls(prefix, frame, storage.uri(index_key(prefix)))

    @classmethod
    def discover(cls, storage: Storage, keys: Sequence[str]) -> ShardIndex | None:
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
