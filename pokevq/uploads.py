"""Publishing outputs to storage: checkpoints, TensorBoard event files and the training log.

`checkpoint_latest.pt` and `checkpoint_best.pt` are replaced only after the epoch's own
checkpoint is fully uploaded and verified, so they never point at a partial object.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from pokevq.checkpoint import sha256_file
from pokevq.errors import CheckpointError, StorageError
from pokevq.layout import Layout
from pokevq.storage import Storage

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"


def publish_checkpoint(
    storage: Storage, layout: Layout, local_path: str | Path, epoch: int, sha256: str, is_best: bool
) -> dict[str, str]:
    """Upload an epoch's checkpoint, verify it, then point `latest` (and `best`) at it."""
    local_path = Path(local_path)
    key = layout.checkpoint(epoch)
    try:
        size = local_path.stat().st_size
        local_sha = sha256_file(local_path)
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"The checkpoint of epoch {epoch} ({local_path}) is gone from this machine and was never uploaded to "
            f"{storage.uri(key)}: start a new run with --resume {storage.uri(layout.checkpoint_latest)}"
        ) from exc
    if local_sha != sha256:
        raise CheckpointError(
            f"The local checkpoint of epoch {epoch} ({local_path}) changed on disk after it was written "
            f"(SHA-256 {local_sha[:16]}…, written as {sha256[:16]}…): not uploading it."
        )
    storage.upload_file(local_path, key, metadata={SHA256_METADATA: sha256})
    verify_upload(storage, key, size, sha256, scratch=local_path.parent, remove_if_bad=True)
    storage.copy(key, layout.checkpoint_latest)
    verify_upload(storage, layout.checkpoint_latest, size, sha256)
    uris = {"checkpoint": storage.uri(key), "latest": storage.uri(layout.checkpoint_latest)}
    if is_best:
        storage.copy(key, layout.checkpoint_best)
        verify_upload(storage, layout.checkpoint_best, size, sha256)
        uris["best"] = storage.uri(layout.checkpoint_best)
    log.info("Checkpoint of epoch %d published: %s%s", epoch, uris["checkpoint"], " (best)" if is_best else "")
    return uris


def is_published(storage: Storage, layout: Layout, epoch: int, sha256: str) -> bool:
    """Whether the epoch's checkpoint is in storage as these bytes (by its recorded SHA-256 where there is one)."""
    info = storage.head(layout.checkpoint(epoch))
    if info is None:
        return False
    return info.metadata is None or info.metadata.get(SHA256_METADATA, "").lower() == sha256


def verify_upload(
    storage: Storage,
    key: str,
    size: int,
    sha256: str,
    *,
    scratch: str | Path | None = None,
    remove_if_bad: bool = False,
) -> None:
    """Check an uploaded checkpoint: its size and recorded `sha256` (HEAD), and with `scratch`, its bytes.

    With `scratch` (a local directory) the object is downloaded again and hashed, so a body that was
    cut or altered on its way is caught even when its size and metadata look right. A bad object is
    removed with `remove_if_bad`, so nothing ever resumes from it; the error is a `StorageError`
    (worth a retry: the next upload usually goes through).
    """
    uri = storage.uri(key)
    info = storage.head(key)
    problem = None
    if info is None:
        problem = "found nothing"
    elif info.size != size:
        problem = f"found {info.size} bytes"
    elif info.metadata is not None and info.metadata.get(SHA256_METADATA, "").lower() != sha256:
        problem = f"found recorded SHA-256 {info.metadata.get(SHA256_METADATA) or 'none'}"
    elif scratch is not None:
        fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".verify-", suffix=".part")
        os.close(fd)
        try:
            storage.download_file(key, tmp)
            actual = sha256_file(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if actual != sha256:
            problem = f"found {size} bytes with SHA-256 {actual[:16]}…"
    if problem is None:
        return
    removed = ""
    if remove_if_bad and info is not None:
        try:
            storage.delete(key)
            removed = "; the bad object was removed"
        except StorageError as exc:  # the error below says what matters
            log.warning("Could not remove the unverified checkpoint %s: %s", uri, exc)
    raise StorageError(
        f"Checkpoint upload of {uri} could not be verified (expected {size} bytes with SHA-256 {sha256[:16]}…, "
        f"{problem}){removed}; checkpoint_latest.pt and checkpoint_best.pt were not moved to it."
    )


class TensorBoardSync:
    """Mirror a local TensorBoard directory to storage, uploading only new or changed files."""

    def __init__(self, local_dir: str | Path, storage: Storage, prefix: str) -> None:
        self.local_dir = Path(local_dir)
        self.storage = storage
        self.prefix = prefix
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _key(self, path: Path) -> str:
        return self.prefix + path.relative_to(self.local_dir).as_posix()

    def restore(self) -> int:
        """Bring an experiment's earlier event files back, so curves continue after a resume."""
        count = 0
        for info in self.storage.list(self.prefix):
            relative = info.key[len(self.prefix):]
            if not relative:
                continue
            target = self.local_dir / relative
            if not target.exists():
                self.storage.download_file(info.key, target)
                count += 1
            stat = target.stat()
            self._uploaded[relative] = (stat.st_size, stat.st_mtime_ns)
        if count:
            log.info("Restored %d TensorBoard file(s) from %s", count, self.storage.uri(self.prefix))
        return count

    def sync(self) -> list[str]:
        """Upload what changed since the last sync; returns the keys uploaded."""
        with self._lock:
            uploaded = []
            if not self.local_dir.is_dir():
                return uploaded
            for path in sorted(p for p in self.local_dir.rglob("*") if p.is_file()):
                relative = path.relative_to(self.local_dir).as_posix()
                stat = path.stat()
                signature = (stat.st_size, stat.st_mtime_ns)
                if self._uploaded.get(relative) == signature:
                    continue
                key = self._key(path)
                self.storage.upload_file(path, key)
                self._uploaded[relative] = signature
                uploaded.append(key)
            return uploaded


def upload_log(storage: Storage, layout: Layout, log_path: str | Path) -> str | None:
    """Upload the local training log as `training_latest.log`."""
    log_path = Path(log_path)
    if not log_path.exists():
        return None
    for handler in logging.getLogger("pokevq").handlers:
        handler.flush()
    storage.upload_file(log_path, layout.log_latest)
    return storage.uri(layout.log_latest)
