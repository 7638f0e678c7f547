"""Decoded, resized frames of a split, memory-mapped next to the byte cache: decode each PNG once."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pokevq import settings
from pokevq.data.cache import _TMP_SUFFIX, FrameCache

log = logging.getLogger(__name__)

DECODED_DIR = "decoded"
DECODED_KEEP = 4  # decoded stores kept per cache directory (least recently used removed first)


class DecodedFrameStore:
    """Decoded, resized frames of one list of frames (a split), memory-mapped next to the byte cache.

    Decoding a PNG costs far more than reading the decoded pixels, so after the first epoch
    (or a warm step that decodes) an epoch reads rows of ``<cache>/decoded/<digest>.npy``,
    an (N, H, W, 3) uint8 array, instead of decoding N PNGs. ``<digest>.ok`` holds one byte
    per row: 1 once the row holds its frame. The digest covers the namespace, the image size
    and every (key, etag) in order, so a changed object, another split or another size gets
    another store; the byte cache, its LRU order and its limits are unchanged.

    A store is only made when the split fits the cache's limits (at most ``max_items`` rows,
    and ``max_bytes`` when set) and ``$POKEVQ_DECODED_CACHE_BYTES`` (default 8 GiB; 0 turns
    it off); at most ``DECODED_KEEP`` stores stay in a directory. The files are created by
    the process that opens the store (the trainer's), then any process may fill rows: a row
    is written before its flag, and a reader trusts only flagged rows. Frames that fail to
    decode are never stored, so they are skipped (and reported) on every pass as before.
    """

    def __init__(self, directory: Path, digest: str, rows: int, image_size: tuple[int, int]) -> None:
        self.directory = directory
        self.digest = digest
        self.rows = rows
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.data_path = directory / f"{digest}.npy"
        self.flags_path = directory / f"{digest}.ok"
        self._data: Any = None
        self._flags: Any = None
        self._broken = False

    @property
    def row_bytes(self) -> int:
        return self.image_size[0] * self.image_size[1] * 3

    @classmethod
    def open(
        cls,
        cache: FrameCache,
        namespace: str,
        keys: list[str],
        etags: list[str],
        image_size: tuple[int, int],
    ) -> DecodedFrameStore | None:
        """The store for these frames, created when missing; None when it would not fit the limits."""
        rows = len(keys)
        h, w = int(image_size[0]), int(image_size[1])
        size = rows * h * w * 3
        limit = settings.decoded_cache_bytes()
        if cache.max_bytes is not None:
            limit = min(limit, cache.max_bytes)
        if cache.closed or rows == 0 or rows > cache.max_items or size > limit:
            return None
        digest = hashlib.sha256()
        digest.update(f"{namespace}\0{h}x{w}\0{rows}\0".encode("utf-8", "surrogatepass"))
        for key, etag in zip(keys, etags):
            digest.update(key.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
            digest.update(etag.encode("utf-8", "surrogatepass"))
            digest.update(b"\n")
        directory = cache.directory / DECODED_DIR
        store = cls(directory, digest.hexdigest(), rows, (h, w))
        try:
            store._create(size, limit)
        except OSError as exc:
            log.warning("Decoded-frame store in %s unavailable (%s); decoding frames every epoch", directory, exc)
            return None
        return store

    def _create(self, size: int, limit: int) -> None:
        import fcntl

        import numpy as np

        self.directory.mkdir(exist_ok=True)
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.data_path.is_file() and self.flags_path.is_file():
                    stamp = time.time_ns()
                    os.utime(self.data_path, ns=(stamp, stamp))  # most recently used
                    return
                self._evict(size, limit)
                arrays = ((self.data_path, (self.rows, *self.image_size, 3)), (self.flags_path, (self.rows,)))
                for path, shape in arrays:
                    fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.digest[:8]}-", suffix=_TMP_SUFFIX)
                    os.close(fd)
                    try:
                        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                        del array
                        # Reserve the blocks now: a full disk must fail here, not as SIGBUS on a mapped write.
                        fd = os.open(tmp, os.O_RDWR)
                        try:
                            if hasattr(os, "posix_fallocate"):
                                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
                        finally:
                            os.close(fd)
                        os.replace(tmp, path)
                    except BaseException:
                        Path(tmp).unlink(missing_ok=True)
                        raise
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _evict(self, incoming: int, limit: int) -> None:
        """Drop least recently used stores so this one fits (caller holds the directory lock)."""
        stores = []
        for path in self.directory.glob("*.npy"):
            try:
                stat = path.stat()
            except OSError:
                continue
            stores.append((stat.st_mtime_ns, path, stat.st_size))
        stores.sort()
        total = sum(size for _, _, size in stores)
        while stores and (len(stores) >= DECODED_KEEP or total + incoming > limit):
            _, path, size = stores.pop(0)
            path.unlink(missing_ok=True)
            path.with_suffix(".ok").unlink(missing_ok=True)
            total -= size
            log.info("Removed decoded-frame store %s (least recently used)", path.name)

    # -- pickling (DataLoader workers map the files themselves) ----------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_data=None, _flags=None)
        return state

    def _arrays(self) -> tuple[Any, Any] | None:
        if self._broken:
            return None
        if self._data is None:
            import numpy as np

            try:
                self._flags = np.load(self.flags_path, mmap_mode="r+")
                self._data = np.load(self.data_path, mmap_mode="r+")
            except (OSError, ValueError) as exc:
                log.warning("Decoded-frame store %s unusable (%s); decoding frames instead", self.data_path, exc)
                self._broken = True
                return None
            if self._data.shape != (self.rows, *self.image_size, 3) or self._flags.shape != (self.rows,):
                self._broken = True
                return None
        return self._data, self._flags

    # -- rows ---------------------------------------------------------------------------

    def ready(self, indices: Any) -> Any:
        """Boolean mask: which of `indices` hold their decoded frame (all False when unusable)."""
        import numpy as np

        arrays = self._arrays()
        if arrays is None:
            return np.zeros(len(indices), dtype=bool)
        return arrays[1][np.asarray(indices, dtype=np.int64)] == 1

    def get(self, index: int) -> Any:
        """The (H, W, 3) uint8 frame of row `index`, or None when not stored yet."""
        arrays = self._arrays()
        if arrays is None or arrays[1][index] != 1:
            return None
        return arrays[0][index]

    def get_many(self, indices: Any) -> Any:
        """(B, H, W, 3) uint8 frames of rows that are all ready (a copy)."""
        import numpy as np

        arrays = self._arrays()
        assert arrays is not None
        return arrays[0][np.asarray(indices, dtype=np.int64)]

    def put(self, index: int, frame: Any) -> None:
        """Store a decoded frame; a failure only means decoding it again next time."""
        arrays = self._arrays()
        if arrays is None or frame.shape != (*self.image_size, 3):
            return
        try:
            arrays[0][index] = frame
            arrays[1][index] = 1
        except (OSError, ValueError) as exc:  # e.g. the disk is full under the sparse file
            log.warning("Decoded-frame store write failed (%s); decoding frames instead", exc)
            self._broken = True

    def filled(self) -> int:
        arrays = self._arrays()
        return 0 if arrays is None else int((arrays[1] == 1).sum())

    def __repr__(self) -> str:
        return f"DecodedFrameStore({str(self.data_path)!r}, rows={self.rows}, image_size={self.image_size})"
