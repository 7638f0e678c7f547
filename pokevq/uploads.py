"""Publishing outputs to storage: checkpoints, TensorBoard event files and the training log.

`checkpoint_latest.pt` and `checkpoint_best.pt` are replaced only after the epoch's own
checkpoint is fully uploaded and verified, so they never point at a partial object.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pokevq.errors import StorageError
from pokevq.layout import Layout
from pokevq.storage import Storage

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"


def publish_checkpoint(
    storage: Storage, layout: Layout, local_path: str | Path, epoch: int, sha256: str, is_best: bool
) -> dict[str, str]:
    """Upload an epoch's checkpoint, verify it, then point `latest` (and `best`) at it."""
    local_path = Path(local_path)
    size = local_path.stat().st_size
    key = layout.checkpoint(epoch)
    storage.upload_file(local_path, key, metadata={SHA256_METADATA: sha256})
    info = storage.head(key)
    if info is None or info.size != size:
        raise StorageError(
            f"Checkpoint upload of {storage.uri(key)} could not be verified "
            f"(expected {size} bytes, found {info.size if info else 'nothing'}); latest was not updated."
        )
    storage.copy(key, layout.checkpoint_latest)
    uris = {"checkpoint": storage.uri(key), "latest": storage.uri(layout.checkpoint_latest)}
    if is_best:
        storage.copy(key, layout.checkpoint_best)
        uris["best"] = storage.uri(layout.checkpoint_best)
    log.info("Checkpoint of epoch %d published: %s%s", epoch, uris["checkpoint"], " (best)" if is_best else "")
    return uris


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
