"""Which checkpoint a run continues from: `--resume`, verified against its recorded SHA-256, with a
fallback to the newest epoch checkpoint that verifies."""

from __future__ import annotations

import logging
from pathlib import Path

from pokevq.config import TrainConfig
from pokevq.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    ObjectNotFoundError,
)
from pokevq.layout import LATEST_FILE, epoch_file, epoch_of
from pokevq.storage import FAST_FAIL, S3Credentials, S3Storage, Storage, storage_for_uri
from pokevq.train.checkpoint import (
    Checkpoint,
    CheckpointCorruptError,
    load_checkpoint,
    verify_sha256,
)
from pokevq.train.publish import (
    SHA256_METADATA,
)

log = logging.getLogger(__name__)

_SAVED = b"PK\x03\x04"  # torch.save writes a zip archive


def fetch_checkpoint(storage: Storage, key: str, target: Path) -> tuple[Checkpoint, str]:
    """Download a checkpoint, check its bytes against the SHA-256 recorded at upload, and load it safely.

    Raises `ObjectNotFoundError` when it does not exist and `CheckpointCorruptError` when its bytes are
    not the uploaded ones (or cannot be read as a checkpoint). Objects without a recorded SHA-256
    (local storage, files copied by hand) are only checked by loading them.
    """
    uri = storage.uri(key)
    info = storage.head(key)
    if info is None:
        raise ObjectNotFoundError(f"Object not found: {uri}")
    storage.download_file(key, target)
    verify_sha256(target, (info.metadata or {}).get(SHA256_METADATA), uri)
    return load_checkpoint(target, name=uri), uri


def _newest_good_epoch(storage: Storage, latest_key: str, workdir: Path) -> tuple[Checkpoint, str] | None:
    """The newest `checkpoint_epoch_N.pt` next to `latest_key` that verifies and loads."""
    folder = latest_key.rsplit("/", 1)[0] + "/" if "/" in latest_key else ""
    found = []
    for info in storage.list(folder):
        epoch = epoch_of(info.key[len(folder):])
        if epoch is not None:
            found.append((epoch, info.key))
    for epoch, key in sorted(found, reverse=True):
        try:
            return fetch_checkpoint(storage, key, workdir / "resume" / epoch_file(epoch))
        except (CheckpointError, ObjectNotFoundError) as exc:
            log.warning("Not resuming from %s either: %s", storage.uri(key), exc)
    return None


def resolve_resume(
    config: TrainConfig, workdir: Path, credentials: S3Credentials | None = None
) -> tuple[Checkpoint, str]:
    """Fetch the checkpoint named by `--resume` (s3:// URI or local path), verify it and load it safely.

    When `checkpoint_latest.pt` fails verification, the newest epoch checkpoint that verifies is used
    instead, with a warning: at most the epochs after it are trained again.
    """
    uri = str(config.run.resume)
    try:
        storage, key = storage_for_uri(uri, region=str(config.storage.s3_region),
                                       endpoint_url=config.storage.s3_endpoint_url, credentials=credentials)
    except ConfigError as exc:
        raise CheckpointNotFoundError(f"Checkpoint not found: {uri} ({exc})") from exc
    local = workdir / "resume" / Path(key).name
    try:
        state, _ = fetch_checkpoint(storage, key, local)
        return state, uri
    except ObjectNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"Checkpoint not found: {uri}. List what exists with `aws s3 ls` on the checkpoints prefix."
        ) from exc
    except CheckpointCorruptError as exc:
        if Path(key).name != LATEST_FILE:
            raise
        fallback = _newest_good_epoch(storage, key, workdir)
        if fallback is None:
            raise
        log.warning("%s Resuming from %s instead, the newest epoch checkpoint that verifies.", exc, fallback[1])
        return fallback


def check_resume_exists(config: TrainConfig, credentials: S3Credentials | None = None) -> None:
    """Fail before any heavy work when the checkpoint to resume from is missing."""
    if not config.run.resume:
        return
    uri = str(config.run.resume)
    try:
        storage, key = storage_for_uri(
            uri, region=str(config.storage.s3_region), endpoint_url=config.storage.s3_endpoint_url,
            credentials=credentials, **FAST_FAIL,
        )
    except ConfigError as exc:
        raise CheckpointNotFoundError(f"Checkpoint not found: {uri} ({exc})") from exc
    if not storage.exists(key):
        if isinstance(storage, S3Storage):
            storage.list_one(key)  # a HEAD cannot tell a missing bucket from a missing key; a listing can
        raise CheckpointNotFoundError(f"Checkpoint not found: {uri}")
    # Any other object is refused here, before the run writes its manifest (a corrupt latest still falls back).
    if Path(key).name != LATEST_FILE and storage.get_range(key, 0, len(_SAVED)) != _SAVED:
        raise CheckpointCorruptError(f"Checkpoint {uri} is not a valid pokevq checkpoint: not a file torch.save "
                                     "writes; pass a checkpoint_*.pt that pokevq wrote")
