"""`pokevq pack`: frames under a prefix decoded once into tar shards of frame records plus a Parquet index.

See `shards` for the layout and `record` for a frame's format."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pokevq.data import record
from pokevq.data.frames import to_record
from pokevq.data.manifest import _normalize_prefix, index_frames
from pokevq.data.shards import (
    INDEX_COLUMNS,
    ShardIndex,
    ShardIndexError,
    index_key,
    shards_prefix,
)
from pokevq.data.sizes import parse_size  # noqa: F401 - `pokevq pack`'s option, kept importable here
from pokevq.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE


@dataclass
class PackResult:
    frames: int
    shards: int
    bytes: int
    seconds: float
    index_key: str
    shard_keys: list[str] = field(default_factory=list)
    removed: int = 0  # shards no frame is read from any more, removed
    indexed: int = 0  # frames the index lists after this pack

    def to_dict(self) -> dict[str, Any]:
        names = ("frames", "shards", "bytes", "seconds", "index_key", "removed", "indexed")
        return {k: getattr(self, k) for k in names}


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

    def add(self, name: str, key: str, etag: str, data: bytes, mtime: float, size: int) -> None:
        """`data`: what the shard stores for the frame; `size`: the frame object's own size, for the index."""
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
        self.rows.append((key, etag, size, self.shard_keys[-1], offset, len(data)))
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
    full: bool = False,
) -> PackResult:
    """Pack the frames under `prefix` that no shard holds yet into new shards, then replace the index.

    Incremental: frames already packed with their current ETag stay where they are; new and changed
    frames go into new shards of about `shard_bytes`; the new index (old rows kept, new rows added,
    rows of frames gone or changed dropped) replaces the old one in one write. Shards no row points
    at any more are removed afterwards (unless `keep_old`). `full` repacks every frame.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    prefix = _normalize_prefix(prefix)
    if manifest is None:
        manifest = index_frames(storage, prefix, val_fraction=0.0)
    kept = _still_packed(storage, prefix, manifest) if not full else pd.DataFrame(columns=INDEX_COLUMNS)
    done = set(zip(kept["key"], kept["etag"].astype(str)))
    todo = manifest[[(k, str(e)) not in done for k, e in zip(manifest["key"], manifest["etag"])]]
    if not len(todo) and not full and len(kept) and _index_rows(storage, prefix) == len(kept):
        log.info("Nothing new to pack under %s: all %d frames are in shards", storage.uri(prefix), len(kept))
        return PackResult(frames=0, shards=0, bytes=0, seconds=round(time.perf_counter() - started, 3),
                          index_key=index_key(prefix), indexed=len(kept))
    pack_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    directory = f"{shards_prefix(prefix)}{pack_id}/"
    keys = todo["key"].tolist()
    etags = todo["etag"].astype(str).tolist()
    stamps = [t.timestamp() for t in pd.to_datetime(todo["last_modified"], utc=True)]
    bar = tqdm(total=len(keys), desc="pack", unit="frame", disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-pack") as pool, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="pokevq-pack-upload") as uploads:
        writer = _ShardWriter(storage, directory, shard_bytes, uploads)
        undecodable = 0
        window = max(64, threads * 8)  # frames in flight: bounded memory whatever the prefix holds
        for start in range(0, len(keys), window):
            chunk = range(start, min(start + window, len(keys)))
            for i, (data, packed, size) in zip(chunk, pool.map(lambda i: _packed(storage.get_bytes(keys[i])), chunk)):
                name = keys[i][len(prefix):] if keys[i].startswith(prefix) else keys[i]
                writer.add(name + record.SUFFIX if packed else name, keys[i], etags[i], data, stamps[i], size)
                undecodable += not packed
                bar.update(1)
        writer.close()
    bar.close()
    if undecodable:
        log.warning("%d frame(s) under %s do not decode; packed as they are, so training skips and counts them",
                    undecodable, storage.uri(prefix))
    added = pd.DataFrame(writer.rows, columns=INDEX_COLUMNS)
    index = pd.concat([kept[INDEX_COLUMNS], added], ignore_index=True) if len(kept) else added
    buffer = io.BytesIO()
    index.to_parquet(buffer, index=False)
    storage.put_bytes(index_key(prefix), buffer.getvalue())  # one write: readers see the old index or the new
    removed = 0 if keep_old else _remove_unreferenced(storage, prefix, set(index["shard"]))
    result = PackResult(
        frames=len(added), shards=len(writer.shard_keys), bytes=writer.total,
        seconds=round(time.perf_counter() - started, 3), index_key=index_key(prefix),
        shard_keys=list(writer.shard_keys), removed=removed, indexed=len(index),
    )
    log.info("Packed %d new frame(s) (%.1f MB) into %d shard(s) under %s in %.1fs; the index lists %d frames",
             result.frames, result.bytes / 1e6, result.shards, storage.uri(directory), result.seconds, result.indexed)
    return result


def _packed(data: bytes) -> tuple[bytes, bool, int]:
    """The frame as a decoded record (see `record`), or its own bytes when it does not decode; True: a record."""
    packed = to_record(data)
    return (packed, True, len(data)) if packed is not None else (data, False, len(data))


def _index_rows(storage: Storage, prefix: str) -> int:
    try:
        found = ShardIndex.load(storage, prefix)
    except ShardIndexError:
        return -1
    return len(found) if found is not None else -1


def _still_packed(storage: Storage, prefix: str, manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows of the current index whose frame is still listed with the ETag it was packed with."""
    try:
        found = ShardIndex.load(storage, prefix)
    except ShardIndexError as exc:
        log.warning("%s; packing every frame again", exc)
        return pd.DataFrame(columns=INDEX_COLUMNS)
    if found is None:
        return pd.DataFrame(columns=INDEX_COLUMNS)
    rows = found.frame.assign(etag=found.frame["etag"].astype(str))
    listed = pd.DataFrame({"key": manifest["key"], "etag": manifest["etag"].astype(str)}).drop_duplicates()
    return rows.merge(listed, on=["key", "etag"], how="inner")[INDEX_COLUMNS]


def _remove_unreferenced(storage: Storage, prefix: str, referenced: set[str]) -> int:
    removed = 0
    for info in storage.list(shards_prefix(prefix)):
        if info.key.endswith(".tar") and info.key not in referenced:
            storage.delete(info.key)
            removed += 1
    return removed


