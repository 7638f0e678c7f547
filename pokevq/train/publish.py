"""Publishing outputs to storage: checkpoints, TensorBoard event files and the training log.

`checkpoint_latest.pt` and `checkpoint_best.pt` are replaced only after the epoch's own
checkpoint is fully uploaded and verified, so they never point at a partial object.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pokevq.errors import CheckpointError, OutputDirError, StorageError
from pokevq.layout import Layout
from pokevq.storage import Storage
from pokevq.train.checkpoint import sha256_file

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
STEP_METADATA = "global-step"
_LATEST_LOCK = threading.Lock()  # one process moves `latest` at a time (step and epoch uploads overlap)


def publish_checkpoint(
    storage: Storage,
    layout: Layout,
    local_path: str | Path,
    epoch: int,
    sha256: str,
    is_best: bool,
    *,
    global_step: int | None = None,
    mid_epoch: bool = False,
    guard: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Upload a checkpoint, verify it, then point `latest` (and `best`) at it.

    `guard` runs before anything is written and raises to write nothing (the run's lease, renewed).

    An epoch's checkpoint goes to `checkpoint_epoch_N.pt`; a mid-epoch one (`mid_epoch`) to
    `checkpoint_step_S.pt`. `latest` only ever moves forward in training steps: an upload that
    finishes after a later one (the epoch's, while the next epoch already wrote a step
    checkpoint) leaves it where it is.
    """
    local_path = Path(local_path)
    key = layout.step_checkpoint(int(global_step or 0)) if mid_epoch else layout.checkpoint(epoch)
    what = f"step {global_step}" if mid_epoch else f"epoch {epoch}"
    try:
        size = local_path.stat().st_size
        local_sha = sha256_file(local_path)
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"The checkpoint of {what} ({local_path}) is gone from this machine and was never uploaded to "
            f"{storage.uri(key)}: start a new run with --resume {storage.uri(layout.checkpoint_latest)}"
        ) from exc
    if local_sha != sha256:
        raise CheckpointError(
            f"The local checkpoint of {what} ({local_path}) changed on disk after it was written "
            f"(SHA-256 {local_sha[:16]}…, written as {sha256[:16]}…): not uploading it."
        )
    metadata = {SHA256_METADATA: sha256}
    if global_step is not None:
        metadata[STEP_METADATA] = str(int(global_step))
    if guard is not None:
        guard()
    storage.upload_file(local_path, key, metadata=metadata)
    verify_upload(storage, key, size, sha256, scratch=local_path.parent, remove_if_bad=True)
    uris = {"checkpoint": storage.uri(key), "latest": storage.uri(layout.checkpoint_latest)}
    with _LATEST_LOCK:
        if _moves_forward(storage, layout.checkpoint_latest, global_step):
            storage.copy(key, layout.checkpoint_latest)
            verify_upload(storage, layout.checkpoint_latest, size, sha256)
        else:
            log.info("checkpoint_latest.pt already points at a later step than %s: left there", what)
    if is_best and not mid_epoch:
        storage.copy(key, layout.checkpoint_best)
        verify_upload(storage, layout.checkpoint_best, size, sha256)
        uris["best"] = storage.uri(layout.checkpoint_best)
    log.info("Checkpoint of %s published: %s%s", what, uris["checkpoint"], " (best)" if is_best else "")
    return uris


def _moves_forward(storage: Storage, latest: str, global_step: int | None) -> bool:
    """Whether `latest` may point at a checkpoint of `global_step` (never back to an earlier step)."""
    if global_step is None:
        return True
    info = storage.head(latest)
    if info is None or not info.metadata or STEP_METADATA not in info.metadata:
        return True
    try:
        return int(info.metadata[STEP_METADATA]) <= int(global_step)
    except ValueError:
        return True


class StepCheckpointPublisher:
    """Publishes mid-epoch checkpoints on a background thread, so training does not wait for S3.

    Each new one replaces the previous (the older step object is removed once the newer one is
    verified); a failure only warns: the epoch's own checkpoint is still published with retries.
    """

    def __init__(self, storage: Storage, layout: Layout, guard: Callable[[], None] | None = None) -> None:
        self.storage = storage
        self.layout = layout
        self.guard = guard  # runs before each upload (see publish_checkpoint)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pokevq-step-checkpoint")
        self._previous: str | None = None
        self.published: list[str] = []

    def __call__(self, path: Path, sha256: str, global_step: int) -> Future:
        return self._pool.submit(self._publish, Path(path), sha256, global_step)

    def _publish(self, path: Path, sha256: str, global_step: int) -> None:
        try:
            uris = publish_checkpoint(self.storage, self.layout, path, 0, sha256, False, global_step=global_step,
                                      mid_epoch=True, guard=self.guard)
        except Exception as exc:  # noqa: BLE001 - a missed mid-epoch checkpoint must not stop training
            log.warning("Mid-epoch checkpoint of step %d not published (%s); the epoch's checkpoint still will be",
                        global_step, exc)
            return
        self.published.append(uris["checkpoint"])
        key = self.layout.step_checkpoint(global_step)
        if self._previous is not None and self._previous != key:
            try:
                self.storage.delete(self._previous)
            except StorageError as exc:
                log.info("Could not remove the older mid-epoch checkpoint %s: %s", self._previous, exc)
        self._previous = key

    def wait(self) -> None:
        """Block until every submitted checkpoint is published (or failed)."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


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
    unflushed = None
    for handler in logging.getLogger("pokevq").handlers:
        try:
            handler.flush()
        except OSError as exc:  # a full disk: what is already in the file is still uploaded
            unflushed = exc
    storage.upload_file(log_path, layout.log_latest)
    if unflushed is not None:
        raise OutputDirError(f"Cannot write the training log {log_path}: {unflushed.strerror or unflushed}. "
                             "Free disk space or pass another --output-dir.") from unflushed
    return storage.uri(layout.log_latest)
