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
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from pokevq.errors import ConfigError, ObjectNotFoundError, StorageError
from pokevq.manifest import SHARDS_DIR, _normalize_prefix, index_frames
from pokevq.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
INDEX_NAME = "index.parquet"
INDEX_COLUMNS = ["key", "etag", "size", "shard", "offset", "length"]
# Reading: ranges closer than this are merged into one request; one request reads at most MAX_SPAN bytes.
COALESCE_GAP = 256 * 1024
MAX_SPAN = 8 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE


def shards_prefix(prefix: str) -> str:
    """Where the shards of a frames prefix live: `<prefix>/_shards/`."""
    return f"{_normalize_prefix(prefix)}{SHARDS_DIR}/"


def index_key(prefix: str) -> str:
    return shards_prefix(prefix) + INDEX_NAME


def parse_size(text: str | int) -> int:
    """`128MB`, `64MiB`, `1G`, `500k` or a number of bytes."""
    if isinstance(text, int):
        value = text
    else:
        raw = str(text).strip().lower().replace(" ", "")
        units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
                 "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
        number = raw.rstrip("kmgib")
        unit = raw[len(number):]
        try:
            value = int(float(number) * units[unit])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"shard size must look like 128MB, 64MiB or a number of bytes; got {text!r}") from exc
    if value < 1024:
        raise ConfigError(f"shard size must be at least 1 KiB; got {text!r}")
    return value


# ----------------------------------------------------------------------------- packing


@dataclass
class PackResult:
    frames: int
    shards: int
    bytes: int
    seconds: float
    index_key: str
    shard_keys: list[str] = field(default_factory=list)
    removed: int = 0  # shards of earlier packs removed

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("frames", "shards", "bytes", "seconds", "index_key", "removed")}


class _ShardWriter:
    """Appends frames to a tar file on local disk; uploads it once it reaches the shard size."""

    def __init__(self, storage: Storage, directory: str, shard_bytes: int, uploads: ThreadPoolExecutor) -> None:
        self.storage = storage
        self.directory = directory
        self.shard_bytes = shard_bytes
        self.uploads = uploads
        self.rows: list[tuple[str, str, int, str, int, int]] = []
        self.shard_keys: list[str] = []
        self.pending: list[Any] = []
        self.total = 0
        self._tar: tarfile.TarFile | None = None
        self._file: Any = None
        self._path = ""

    def _open(self) -> None:
        fd, self._path = tempfile.mkstemp(prefix="pokevq-shard-", suffix=".tar")
        self._file = os.fdopen(fd, "w+b")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self.shard_keys.append(f"{self.directory}shard-{len(self.shard_keys):05d}.tar")

    def add(self, name: str, key: str, etag: str, data: bytes, mtime: float) -> None:
        if self._tar is None:
            self._open()
        assert self._tar is not None
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(mtime)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        # addfile pads the data to whole 512-byte blocks; the data ends where the padding starts.
        padded = -(-len(data) // _BLOCK) * _BLOCK
        offset = self._tar.offset - padded
        self.rows.append((key, etag, len(data), self.shard_keys[-1], offset, len(data)))
        self.total += len(data)
        if self._tar.offset >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # writes the end-of-archive blocks
        self._file.close()
        path, key = self._path, self.shard_keys[-1]
        self._tar = self._file = None

        def upload() -> None:
            try:
                self.storage.upload_file(path, key)
            finally:
                os.unlink(path)

        self.pending.append(self.uploads.submit(upload))

    def close(self) -> None:
        self.flush()
        for future in self.pending:
            future.result()


def pack(
    storage: Storage,
    prefix: str,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    threads: int = 32,
    manifest: pd.DataFrame | None = None,
    keep_old: bool = False,
    progress: bool = False,
) -> PackResult:
    """Write every frame under `prefix` into tar shards of about `shard_bytes`, then the index."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    prefix = _normalize_prefix(prefix)
    if manifest is None:
        manifest = index_frames(storage, prefix, val_fraction=0.0)
    pack_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    directory = f"{shards_prefix(prefix)}{pack_id}/"
    keys = manifest["key"].tolist()
    etags = manifest["etag"].astype(str).tolist()
    stamps = [t.timestamp() for t in pd.to_datetime(manifest["last_modified"], utc=True)]
    bar = tqdm(total=len(keys), desc="pack", unit="frame", disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-pack") as pool, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="pokevq-pack-upload") as uploads:
        writer = _ShardWriter(storage, directory, shard_bytes, uploads)
        window = max(64, threads * 8)  # frames in flight: bounded memory whatever the prefix holds
        for start in range(0, len(keys), window):
            chunk = range(start, min(start + window, len(keys)))
            for i, data in zip(chunk, pool.map(lambda i: storage.get_bytes(keys[i]), chunk)):
                name = keys[i][len(prefix):] if keys[i].startswith(prefix) else keys[i]
                writer.add(name, keys[i], etags[i], data, stamps[i])
                bar.update(1)
        writer.close()
    bar.close()
    index = pd.DataFrame(writer.rows, columns=INDEX_COLUMNS)
    buffer = io.BytesIO()
    index.to_parquet(buffer, index=False)
    storage.put_bytes(index_key(prefix), buffer.getvalue())
    removed = 0 if keep_old else _remove_old_packs(storage, prefix, directory)
    result = PackResult(
        frames=len(index), shards=len(writer.shard_keys), bytes=writer.total,
        seconds=round(time.perf_counter() - started, 3), index_key=index_key(prefix),
        shard_keys=list(writer.shard_keys), removed=removed,
    )
    log.info("Packed %d frames (%.1f MB) into %d shard(s) under %s in %.1fs", result.frames, result.bytes / 1e6,
             result.shards, storage.uri(directory), result.seconds)
    return result


def _remove_old_packs(storage: Storage, prefix: str, keep: str) -> int:
    removed = 0
    for info in storage.list(shards_prefix(prefix)):
        if info.key.endswith(".tar") and not info.key.startswith(keep):
            storage.delete(info.key)
            removed += 1
    return removed


# ----------------------------------------------------------------------------- reading


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
            from pokevq.data import FATAL_STORAGE_ERRORS

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
