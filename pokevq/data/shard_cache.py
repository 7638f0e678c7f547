"""Whole shards on local disk, bounded in bytes, shared by every DataLoader worker and rank of a machine.

`<cache dir>/shards/` holds one file per shard, named by a SHA-256 of (namespace, shard key,
size), so no key reaches the file system. The limit holds across processes with two locks
of the operating system (`flock`), never a protocol of our own:

- the directory lock (`.lock`) is held while a process counts the bytes on disk, evicts,
  reserves room for a download (the file is created at its full size at once) and renames a
  finished download into place;
- every reader holds a shared lock on the shard file it reads, and a downloader an exclusive
  one, so eviction (least recently used first, by modification time) skips files in use.

When every byte of the budget is in use, a shard is read into memory instead: slower, never
above the limit. A shard that is already on disk is never downloaded again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pokevq.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

SHARDS_SUBDIR = "shards"
PART_BYTES = 8 * 1024 * 1024  # one ranged GET writes at most this much
_SUFFIX = ".shard"
_PART = ".part"


def shard_file_name(namespace: str, key: str, size: int) -> str:
    digest = hashlib.sha256(f"{namespace}\0{key}\0{size}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest + _SUFFIX


@dataclass
class OpenShard:
    """A shard's bytes, on disk (memory-mapped, shared lock held) or in memory; `close()` releases them."""

    data: Any  # mmap or bytes
    fd: int = -1
    downloaded: bool = False

    def view(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset:offset + length])

    def __len__(self) -> int:
        return len(self.data)

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            self.data.close()
        if self.fd >= 0:
            os.close(self.fd)  # drops the shared lock
            self.fd = -1


class ShardCache:
    """Shard files under `directory`, at most `max_bytes` in all (files being downloaded included)."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"

    def check_fits(self, largest: int, where: str, configured: int | None = None) -> None:
        """A limit smaller than one shard can never cache anything: say so before training starts."""
        if largest > self.max_bytes:
            limit = configured if configured is not None else self.max_bytes
            room = f" (room left for shards: {self.max_bytes})" if limit != self.max_bytes else ""
            raise ConfigError(
                f"max_cache_bytes (--max-cache-bytes) {limit}{room} is smaller than one shard ({largest} bytes) "
                f"of {where}: raise it to a few shards (at least {2 * largest}), or repack with a smaller "
                "`pokevq pack --shard-size`."
            )

    # ------------------------------------------------------------------ reading
    def open(self, namespace: str, key: str, size: int, fetch: Callable[[int, int], bytes]) -> OpenShard:
        """The shard's first `size` bytes; `fetch(start, end)` reads a range from storage when needed."""
        path = self.directory / shard_file_name(namespace, key, size)
        part = path.with_suffix(_PART)
        for _ in range(1000):
            found = self._open_existing(path, size)
            if found is not None:
                return found
            fd = -1
            with self._directory_lock():
                if path.exists():
                    continue
                busy = part.exists()
                if not busy and self._reserve(size):
                    # Created at full size under the directory lock, so no other process counts these bytes twice.
                    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.ftruncate(fd, size)
            if busy:
                self._wait_for(part)
                continue
            if fd < 0:
                log.debug("Shard cache %s is full of shards in use; reading %s into memory", self.directory, key)
                return OpenShard(self._fetch_all(fetch, size), downloaded=True)
            return self._download(fd, path, part, size, fetch)
        raise StorageError(f"Could not open shard {key} in the cache {self.directory}: it kept changing")

    # ------------------------------------------------------------- local units
    def open_local(self, name: str) -> OpenShard | None:
        """A file this machine wrote with `add_local` (a decoded unit), or None when it is not on disk."""
        path = self.directory / shard_file_name("local", name, 0)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return self._open_existing(path, size)

    def discard_local(self, name: str) -> None:
        """Remove a damaged local file (it is written again)."""
        with self._directory_lock():
            self._remove(self.directory / shard_file_name("local", name, 0))

    def claim_local(self, name: str) -> int | None:
        """The right to write `name` (a file descriptor holding an exclusive lock), or None when another reader
        of this machine holds it: this waits until that one has written it (or given up), then returns None."""
        path = self.directory / shard_file_name("local", name, 0)
        part = path.with_suffix(_PART)
        with self._directory_lock():
            if path.exists():
                return None
            if not part.exists():
                fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                return fd
        self._wait_for(part)
        return None

    def add_local(self, name: str, data: bytes | None, claim: int) -> bool:
        """Keep `data` under `name` within the limit (least recently used files nobody reads make room), and give
        the claim up; None or no room: nothing is kept. False: not kept."""
        path = self.directory / shard_file_name("local", name, 0)
        part = path.with_suffix(_PART)
        try:
            with self._directory_lock():
                if data is None or not self._reserve(len(data)):
                    part.unlink(missing_ok=True)
                    return False
                os.ftruncate(claim, len(data))  # its full size at once, so no other process counts it twice
            os.pwrite(claim, data, 0)
            with self._directory_lock():
                os.replace(part, path)
            return True
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            os.close(claim)

    def _open_existing(self, path: Path, size: int) -> OpenShard | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            stat = os.fstat(fd)
            if stat.st_nlink == 0 or stat.st_size != size:  # evicted between open and lock, or damaged
                os.close(fd)
                if stat.st_nlink and stat.st_size != size:
                    self._remove(path)
                return None
            os.utime(fd)  # most recently used
            data = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
            return OpenShard(data, fd)
        except BaseException:
            os.close(fd)
            raise

    def _download(self, fd: int, path: Path, part: Path, size: int, fetch: Callable[[int, int], bytes]) -> OpenShard:
        try:
            written = 0
            while written < size:
                end = min(size, written + PART_BYTES)
                chunk = fetch(written, end)
                if len(chunk) != end - written:
                    raise StorageError(f"short read: {len(chunk)} of {end - written} bytes at offset {written}")
                os.pwrite(fd, chunk, written)
                written = end
            # Under the directory lock: a rename during another process's count could hide this file from it, and
            # flock's exclusive-to-shared change is not atomic (an eviction in between would take the file).
            with self._directory_lock():
                os.replace(part, path)
                fcntl.flock(fd, fcntl.LOCK_SH)  # a reader now, like any other
            data = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
            return OpenShard(data, fd, downloaded=True)
        except BaseException:
            try:
                part.unlink(missing_ok=True)
            finally:
                os.close(fd)
            raise

    @staticmethod
    def _fetch_all(fetch: Callable[[int, int], bytes], size: int) -> bytes:
        parts = []
        for start in range(0, size, PART_BYTES):
            end = min(size, start + PART_BYTES)
            chunk = fetch(start, end)
            if len(chunk) != end - start:
                raise StorageError(f"short read: {len(chunk)} of {end - start} bytes at offset {start}")
            parts.append(chunk)
        return b"".join(parts)

    def _wait_for(self, part: Path) -> None:
        """Block until the download holding `part` finishes (or dies: its lock goes with it)."""
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)
        if part.exists():  # its downloader died: nobody holds it any more
            with self._directory_lock():
                self._remove_unused(part)
            time.sleep(0.01)

    # ----------------------------------------------------------------- the budget
    def _directory_lock(self) -> _Flock:
        return _Flock(self._lock_path)

    def _entries(self) -> list[tuple[float, Path, int]]:
        entries = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith((_SUFFIX, _PART)):
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime, Path(entry.path), stat.st_size))
        return sorted(entries)

    def used_bytes(self) -> int:
        return sum(size for _, _, size in self._entries())

    def _reserve(self, size: int) -> bool:
        """Evict least recently used shards nobody reads until `size` more bytes fit (directory lock held)."""
        entries = self._entries()
        used = sum(s for _, _, s in entries)
        for _, path, file_size in entries:
            if used + size <= self.max_bytes:
                break
            if path.suffix == _SUFFIX and self._remove_unused(path):
                used -= file_size
        return used + size <= self.max_bytes

    @classmethod
    def _remove_unused(cls, path: Path) -> bool:
        """Remove `path` when nobody holds it, unlinked under its exclusive lock: a reader that opened it meanwhile
        waits for the lock, then sees it gone (`_open_existing`)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            cls._remove(path)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
            log.debug("Evicted shard file %s (least recently used)", path.name)
        except FileNotFoundError:
            pass


class _Flock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Flock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
