"""A local directory that mirrors the S3 layout: the fallback and the non-S3 mode."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pokevq.errors import (
    ObjectNotFoundError,
    StorageError,
)
from pokevq.storage.base import ObjectInfo, Storage, operations


def _safe_relative(key: str) -> PurePosixPath:
    """A key (or a prefix ending in '/', or '' for the root) as a relative path that cannot climb out."""
    path = PurePosixPath(key.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise StorageError(f"Refusing unsafe storage key {key!r}: keys must be relative paths without '..'")
    return path


def _write_error(target: Path, exc: OSError) -> StorageError:
    return StorageError(f"Cannot write {target}: {exc.strerror or exc}. Check free space and permissions.")


class LocalStorage(Storage):
    """A directory that mirrors the S3 layout: the fallback and the non-S3 mode."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._thread_lock = threading.Lock()  # flock is per open file: threads also take turns
        self._held = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])

    @property
    def namespace(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_safe_relative(key).parts)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def _write_atomic(self, target: Path, write: Any) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        except OSError as exc:
            raise _write_error(target, exc) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise _write_error(target, exc) from exc

    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._write_atomic(self.path(key), lambda handle: handle.write(data))
        operations.info("local put %s ok (%d bytes)", key, len(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"Object not found: {self.uri(key)}") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read {self.uri(key)}: {exc.strerror or exc}") from exc

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return _local_info(key, stat)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.endswith(".part"):
                    try:
                        yield _local_info(key, full.stat())
                    except FileNotFoundError:
                        continue

    def get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self.path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(max(0, end - start))
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"Object not found: {self.uri(key)}") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read {self.uri(key)}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    # -- conditional writes: atomic on this host under a lock on the object's directory -------------
    # Check and write (an atomic rename) happen under one flock of the directory, so every process
    # and thread of this host takes turns; writers on other hosts sharing the directory over a network
    # file system are not covered. The token is the SHA-256 of the bytes (the base class's), not
    # the mtime, which two quick writes can share.
    atomic_conditions = True

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        with self._directory_lock(key):
            return super().get_with_token(key)

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        with self._directory_lock(key):
            return super().put_if_absent(key, data, metadata)

    def put_if_match(self, key: str, data: bytes, token: str, metadata: dict[str, str] | None = None) -> str:
        with self._directory_lock(key):
            return super().put_if_match(key, data, token, metadata)

    def delete_if_match(self, key: str, token: str) -> bool:
        with self._directory_lock(key):
            return super().delete_if_match(key, token)

    @contextlib.contextmanager
    def _directory_lock(self, key: str) -> Iterator[None]:
        """flock on the object's directory: every process and thread of this host takes turns.

        Reentrant within a thread, so the base class's read-compare-write runs under one lock.
        """
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        directory = self.path(key).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"Cannot lock {directory}: {exc.strerror or exc}") from exc
        with self._thread_lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._held.depth = 1
                yield
            finally:
                self._held.depth = 0
                os.close(fd)

    def upload_file(self, path: str | Path, key: str, metadata: dict[str, str] | None = None) -> None:
        target = self.path(key)
        if Path(path).resolve() == target:
            return

        def write(handle: Any) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 1024 * 1024)

        self._write_atomic(target, write)
        operations.info("local copy %s -> %s ok", Path(path).name, target)

    def download_file(self, key: str, path: str | Path) -> None:
        source = self.path(key)
        if not source.is_file():
            raise ObjectNotFoundError(f"Object not found: {source}")
        path = Path(path)
        if path.resolve() == source:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc

    def copy(self, src_key: str, dst_key: str) -> None:
        source = self.path(src_key)
        if not source.is_file():
            raise ObjectNotFoundError(f"Object not found: {source}")
        self.upload_file(source, dst_key)


def _local_info(key: str, stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=stat.st_size,
        etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
        last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
    )

