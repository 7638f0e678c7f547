"""Local LRU disk cache of frame bytes, so each epoch does not re-download S3.

Files are named only by a SHA-256 of (namespace, key, etag), so no key can
escape the cache directory and a changed object (new ETag) is fetched again.
Writes are atomic (temp file + ``os.replace``); a failed write degrades the
cache to pass-through instead of stopping training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pokevq.errors import CacheDirError

log = logging.getLogger(__name__)

_SUFFIX = ".frame"
_TMP_SUFFIX = ".tmp"
_HEX_LEN = 64  # SHA-256 hex digest


@dataclass
class CacheStats:
    """Counters for one process's use of a cache (a worker copy starts at zero).

    ``bytes_fetched`` counts bytes returned by ``fetch`` on misses;
    ``bytes_served`` counts bytes read back from disk on hits.
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_fetched: int = 0
    bytes_served: int = 0

    def hit_rate(self) -> float:
        """Fraction of lookups answered from disk; 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for logging/metrics, including the derived hit rate."""
        d: dict[str, Any] = asdict(self)
        d["hit_rate"] = self.hit_rate()
        return d


def _cache_name(namespace: str, key: str, etag: str) -> str:
    """Hex SHA-256 of namespace NUL key NUL etag: the only input to a file name."""
    h = hashlib.sha256()
    h.update(namespace.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(key.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(etag.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _is_cache_name(stem: str) -> bool:
    if len(stem) != _HEX_LEN:
        return False
    try:
        int(stem, 16)
    except ValueError:
        return False
    return stem == stem.lower()


def _remove_temp_dir(path: str, owner_pid: int) -> None:
    """Finalizer: remove a temporary cache dir, but only in the process that made it.

    Forked children inherit the finalizer registry; without the pid check a
    DataLoader worker exiting would delete the parent's cache.
    """
    if os.getpid() != owner_pid:
        return
    shutil.rmtree(path, ignore_errors=True)


def _cache_dir_error(path: Path, reason: str) -> CacheDirError:
    return CacheDirError(
        f"Cannot create cache directory {path}: {reason}. Ensure you have write "
        "permission there or pass --cache-dir with a writable path."
    )


class FrameCache:
    """LRU cache of frame bytes on local disk, shared by threads and processes.

    Layout: ``<directory>/<hex[:2]>/<hex>.frame`` with ``hex`` the SHA-256 of
    namespace, key and etag. The recency order lives in an in-memory index
    and in file mtimes (set explicitly with ns precision on every write and
    hit), so a user-given directory is reused across runs with its LRU order.

    Threads: the index is guarded by a lock; ``fetch`` runs outside it, so
    downloads proceed concurrently. Two threads missing one key may both
    fetch; the atomic replace makes that harmless.

    Processes: the object pickles (DataLoader workers); each process keeps
    its own index and stats, and only the creating process ever removes a
    temporary directory. A file evicted by another process reads as a miss
    and is fetched again. Every ``k = max(1, max_items // 16)`` inserts a
    process re-reads the directory before evicting when its index is over a
    limit (not on every eviction: re-reading 1000 files costs milliseconds),
    and processes that may share the directory (worker copies, and any
    process on a user-given directory) also re-read it every ``k`` inserts.

    Guarantee: right after a re-read the directory is trimmed to
    ``max_items`` files (and ``max_bytes``); between re-reads it can also
    hold what other processes wrote since their own last re-read, so it
    stays within about ``max_items + (processes - 1) * k`` files. In a
    single process the limits hold exactly.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        max_items: int = 1000,
        max_bytes: int | None = None,
    ) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_cache_size must be an integer >= 1, got {max_items!r}")
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValueError(f"max_bytes must be None or an integer >= 1, got {max_bytes!r}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.temporary = directory is None
        if directory is None:
            try:
                created = tempfile.mkdtemp(prefix="pokevq-cache-")
            except OSError as exc:
                raise _cache_dir_error(
                    Path(tempfile.gettempdir()), exc.strerror or str(exc)
                ) from exc
            self.directory = Path(created).resolve()
        else:
            self.directory = self._prepare_dir(Path(directory).expanduser())

        self._creator_pid = os.getpid()
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._stats = CacheStats()
        self._inserts_since_scan = 0
        self._rescan_every = max(1, max_items // 16)
        self._last_stamp = 0
        self._write_warned = False
        self._closed = False
        self._finalizer: weakref.finalize | None = None
        if self.temporary:
            self._finalizer = weakref.finalize(
                self, _remove_temp_dir, str(self.directory), self._creator_pid
            )

        self._probe()
        with self._lock:
            self._load_index(self._scan(remove_tmp=True))
            evicted = self._evict_to_limits()
        if self._index or evicted:
            log.info(
                "Reusing frame cache %s: %d files, %d bytes (%d evicted to fit limits)",
                self.directory, len(self._index), self._bytes, evicted,
            )

    # -- setup -------------------------------------------------------------

    @staticmethod
    def _prepare_dir(path: Path) -> Path:
        """Create the user's directory or fail with a message that says what to do."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise _cache_dir_error(path, "it exists and is not a directory") from exc
        except OSError as exc:
            raise _cache_dir_error(path, exc.strerror or str(exc)) from exc
        if not path.is_dir():
            raise _cache_dir_error(path, "it exists and is not a directory")
        return path.resolve()

    def _probe(self) -> None:
        """Write and remove a probe file: mkdir succeeding does not prove writability."""
        try:
            fd, probe = tempfile.mkstemp(dir=self.directory, prefix=".probe-", suffix=_TMP_SUFFIX)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            if self._finalizer is not None:
                self._finalizer()
            raise _cache_dir_error(self.directory, exc.strerror or str(exc)) from exc

    # -- pickling (DataLoader workers) ---------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_finalizer", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._finalizer = None  # a copy never removes the directory
        self._stats = CacheStats()
        self._write_warned = False

    # -- public API ----------------------------------------------------------

    def path_for(self, namespace: str, key: str, etag: str) -> Path:
        """Where (namespace, key, etag) lives; always inside ``directory``."""
        return self._path(_cache_name(namespace, key, etag))

    def contains(self, namespace: str, key: str, etag: str) -> bool:
        """Whether the bytes are on disk now (any process's write counts); no stats."""
        return not self._closed and self.path_for(namespace, key, etag).is_file()

    def get(self, namespace: str, key: str, etag: str, fetch: Callable[[], bytes]) -> bytes:
        """Cached bytes, or ``fetch()`` stored for next time; fetch errors propagate."""
        name = _cache_name(namespace, key, etag)
        if not self._closed:
            data = self._read_hit(name)
            if data is not None:
                return data
        with self._lock:
            self._stats.misses += 1
        data = fetch()  # outside the lock: downloads run concurrently
        if not isinstance(data, bytes):
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError(f"fetch() must return bytes, got {type(data).__name__}")
        with self._lock:
            self._stats.bytes_fetched += len(data)
        self._store(name, data)
        return data

    def put(self, namespace: str, key: str, etag: str, data: bytes) -> None:
        """Store bytes (e.g. prefetched); a failed write is logged, not raised."""
        self._store(_cache_name(namespace, key, etag), bytes(data))

    @property
    def stats(self) -> CacheStats:
        """A copy of the counters, consistent at the moment of the call."""
        with self._lock:
            return replace(self._stats)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def total_bytes(self) -> int:
        """Bytes of the files this process's index knows about."""
        with self._lock:
            return self._bytes

    @property
    def closed(self) -> bool:
        """Closed caches store nothing (the decoded store checks this too)."""
        return self._closed

    def close(self) -> None:
        """Remove a temporary directory (creator process only); keep a user-given one.

        After close the cache is pass-through: ``get`` calls ``fetch`` and
        stores nothing.
        """
        self._closed = True
        if self._finalizer is not None and os.getpid() == self._creator_pid:
            self._finalizer()
        with self._lock:
            self._index.clear()
            self._bytes = 0

    def __enter__(self) -> FrameCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FrameCache({str(self.directory)!r}, max_items={self.max_items}, "
            f"max_bytes={self.max_bytes}, temporary={self.temporary})"
        )

    # -- internals -----------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.directory / name[:2] / f"{name}{_SUFFIX}"

    def _stamp(self) -> int:
        """Strictly increasing ns timestamp (caller holds the lock).

        Kernel file times are jiffy-coarse; explicit ns stamps keep the LRU
        order exact across restarts.
        """
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    def _read_hit(self, name: str) -> bytes | None:
        """Bytes of a cached file, or None (a vanished file is a miss)."""
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            with self._lock:
                self._forget(name)
            return None
        except OSError as exc:
            log.debug("Cache read of %s failed (%s); refetching", path, exc)
            return None
        with self._lock:
            try:
                # Under the lock, so this process's evictions cannot interleave.
                stamp = self._stamp()
                os.utime(path, ns=(stamp, stamp))
            except FileNotFoundError:
                self._forget(name)  # evicted by another process after our read
            except OSError:
                pass
            else:
                self._record(name, len(data))
                self._evict_to_limits()  # the file may be new to us (another process wrote it)
            self._stats.hits += 1
            self._stats.bytes_served += len(data)
        return data

    def _store(self, name: str, data: bytes) -> None:
        if self._closed:
            return
        if self.max_bytes is not None and len(data) > self.max_bytes:
            log.debug(
                "Not caching %d-byte item: larger than max_bytes=%d", len(data), self.max_bytes
            )
            return
        path = self._path(name)
        tmp: str | None = None
        try:
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{name[:8]}-", suffix=_TMP_SUFFIX)
            except FileNotFoundError:
                # Shard dir missing; never recreate parents (a closed temp dir stays gone).
                path.parent.mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{name[:8]}-", suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with self._lock:
                stamp = self._stamp()
            os.utime(tmp, ns=(stamp, stamp))
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            self._warn_write(path, exc)
            return
        with self._lock:
            self._record(name, len(data))
            self._inserts_since_scan += 1
            shared = self._maybe_shared()
            if self._inserts_since_scan >= self._rescan_every and (shared or self._over_limit()):
                self._load_index(self._scan(remove_tmp=False))
            self._evict_to_limits()

    def _warn_write(self, path: Path, exc: OSError) -> None:
        if not self._write_warned:
            self._write_warned = True
            log.warning(
                "Frame cache write to %s failed (%s); continuing without caching "
                "failed items (further failures are logged at debug level)",
                path, exc,
            )
        else:
            log.debug("Frame cache write to %s failed: %s", path, exc)

    def _maybe_shared(self) -> bool:
        """Could another process be writing this directory?"""
        return not self.temporary or os.getpid() != self._creator_pid

    def _record(self, name: str, size: int) -> None:
        """Insert or refresh ``name`` as most recent (caller holds the lock)."""
        old = self._index.pop(name, None)
        if old is not None:
            self._bytes -= old
        self._index[name] = size
        self._bytes += size

    def _forget(self, name: str) -> None:
        old = self._index.pop(name, None)
        if old is not None:
            self._bytes -= old

    def _over_limit(self) -> bool:
        return len(self._index) > self.max_items or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        )

    def _evict_to_limits(self) -> int:
        """Delete least-recently-used files until within both limits (lock held)."""
        evicted = 0
        while self._index and self._over_limit():
            name, size = self._index.popitem(last=False)
            self._bytes -= size
            try:
                os.unlink(self._path(name))
            except FileNotFoundError:
                pass  # another process evicted it already
            except OSError as exc:
                log.debug("Cannot evict %s: %s", name, exc)
            evicted += 1
        self._stats.evictions += evicted
        return evicted

    def _scan(self, remove_tmp: bool) -> list[tuple[int, str, int]]:
        """(mtime_ns, name, size) of every cache file on disk, oldest first.

        With ``remove_tmp`` also deletes ``*.tmp`` leftovers of crashed
        writers (only at init: later, they may be another process's
        in-flight writes).
        """
        entries: list[tuple[int, str, int]] = []
        try:
            top = os.scandir(self.directory)
        except OSError as exc:
            log.debug("Cannot scan cache directory %s: %s", self.directory, exc)
            return entries
        with top:
            for sub in top:
                if remove_tmp and sub.name.endswith(_TMP_SUFFIX):
                    self._unlink_quiet(sub.path)
                    continue
                if len(sub.name) != 2 or not sub.is_dir(follow_symlinks=False):
                    continue
                try:
                    inner = os.scandir(sub.path)
                except OSError:
                    continue
                with inner:
                    for entry in inner:
                        fname = entry.name
                        if fname.endswith(_SUFFIX):
                            stem = fname[: -len(_SUFFIX)]
                            if not _is_cache_name(stem) or stem[:2] != sub.name:
                                continue
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue
                            if entry.is_file(follow_symlinks=False):
                                entries.append((st.st_mtime_ns, stem, st.st_size))
                        elif remove_tmp and fname.endswith(_TMP_SUFFIX):
                            self._unlink_quiet(entry.path)
        entries.sort()
        return entries

    @staticmethod
    def _unlink_quiet(path: str) -> None:
        try:
            os.unlink(path)
            log.debug("Removed leftover temp file %s", path)
        except OSError:
            pass

    def _load_index(self, entries: list[tuple[int, str, int]]) -> None:
        """Replace the index with the directory's contents (lock held)."""
        self._index = OrderedDict((name, size) for _, name, size in entries)
        self._bytes = sum(size for _, _, size in entries)
        self._inserts_since_scan = 0


# ------------------------------------------------------------------ decoded frames
