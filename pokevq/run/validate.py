"""Check everything a run needs before anything heavy starts, and decide where it stores.

Each failure raises one error that starts with the README's wording (its troubleshooting table). When S3 set-up
fails and fallback is allowed, the run continues on local storage with a loud warning.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pokevq.config import StorageOptions
from pokevq.data.frames import is_image_key
from pokevq.errors import CacheDirError, NoFramesError, PokevqError, StorageError
from pokevq.layout import Layout
from pokevq.storage import FAST_FAIL, LocalStorage, S3Credentials, S3Storage, Storage

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class StoragePlan:
    """Where this run reads frames and writes outputs: small and JSON-able, passed between tasks."""

    backend: str  # "s3" or "local"
    output_root: str  # local outputs root (the store itself when backend is local)
    frames_prefix: str  # prefix inside the frames store
    frames_root: str | None = None  # local folder of frames when backend is local
    bucket: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    fallback_reason: str | None = None
    sse: str | None = None  # server-side encryption of every write: "AES256" or "aws:kms"
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None  # account id sent with every S3 request
    # Keys from the orchestrator's block, kept in memory only: never part of the dict a task returns.
    credentials: S3Credentials | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("credentials")
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], credentials: S3Credentials | None = None) -> StoragePlan:
        return cls(**values, credentials=credentials)

    def output_storage(self, **client_options: Any) -> Storage:
        if self.backend == "s3":
            return S3Storage(
                str(self.bucket),
                self.region,
                self.endpoint_url,
                sse=self.sse,
                kms_key_id=self.kms_key_id,
                expected_bucket_owner=self.expected_bucket_owner,
                credentials=self.credentials,
                **client_options,
            )
        return LocalStorage(self.output_root)

    def frames_storage(self, **client_options: Any) -> Storage:
        if self.backend == "s3":
            return self.output_storage(**client_options)
        return LocalStorage(str(self.frames_root))

    def describe(self) -> str:
        if self.backend == "s3":
            where = f" via {self.endpoint_url}" if self.endpoint_url else f" ({self.region})"
            return f"S3 bucket s3://{self.bucket}{where}"
        return f"local directory {self.output_root}"


def check_cache_dir(path: str | None) -> None:
    """A user-given cache directory must be creatable and writable."""
    if not path:
        return
    directory = Path(path).expanduser()
    probe = directory / f".pokevq-probe-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CacheDirError(
            f"Cannot create cache directory {directory}: {exc.strerror or exc}. "
            "Ensure write permissions for the cache directory or pass another --cache-dir."
        ) from exc


def _require_frames(storage: Storage, prefix: str) -> None:
    for obj in storage.list(prefix):
        if is_image_key(obj.key):
            return
    raise NoFramesError(
        f"No frames found under {storage.uri(prefix)}: upload .png/.jpg frames there "
        "(pokevq upload DIR, or aws s3 sync) or point --frames-dir at them."
    )


def _frames_prefix(options: StorageOptions) -> str:
    prefix = options.frames_dir.strip("/")
    return f"{prefix}/" if prefix else ""


def bucket_storage(options: StorageOptions, credentials: S3Credentials | None = None, **client: Any) -> S3Storage:
    """The bucket the options name, with their encryption and expected owner on every request."""
    return S3Storage(str(options.s3_bucket or ""), str(options.s3_region), options.s3_endpoint_url,
                     **options.security(), credentials=credentials, **client)


def validate_s3(options: StorageOptions, experiment: str, credentials: S3Credentials | None = None) -> StoragePlan:
    """Credentials, endpoint, bucket, list/read/write/delete permissions and frames, in that order."""
    storage = bucket_storage(options, credentials, **FAST_FAIL)
    storage.check_credentials()
    prefix = _frames_prefix(options)
    storage.list_one(prefix)  # endpoint reachable, bucket exists, s3:ListBucket allowed
    layout = Layout.for_run(options, experiment)
    for folder in (layout.checkpoints, layout.logs):
        probe = f"{folder}.pokevq-write-probe-{uuid.uuid4().hex}"
        storage.put_bytes(probe, b"pokevq write probe")
        storage.get_bytes(probe)
        storage.delete(probe)
    _require_frames(storage, prefix)
    log.info("S3 access validated: %s (frames under %s)", storage.describe(), storage.uri(prefix))
    return StoragePlan(
        backend="s3",
        output_root=str(Path(options.output_dir).expanduser().resolve()),
        frames_prefix=prefix,
        bucket=storage.bucket,
        region=storage.region,
        endpoint_url=storage.endpoint_url,
        **options.security(),
        credentials=credentials,
    )


def local_plan(options: StorageOptions, fallback_reason: str | None = None) -> StoragePlan:
    """Frames from `frames_dir` as a local folder, outputs under `output_dir`."""
    output_root = Path(options.output_dir).expanduser().resolve()
    frames_root = Path(options.frames_dir).expanduser().resolve()
    try:
        output_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"Cannot create output directory {output_root}: {exc.strerror or exc}. Pass a writable --output-dir."
        ) from exc
    if not os.access(output_root, os.W_OK):
        raise StorageError(f"Cannot write to output directory {output_root}: pass a writable --output-dir.")
    plan = StoragePlan(
        backend="local",
        output_root=str(output_root),
        frames_prefix="",
        frames_root=str(frames_root),
        fallback_reason=fallback_reason,
    )
    try:
        _require_frames(plan.frames_storage(), "")
    except NoFramesError as exc:
        if fallback_reason:
            raise NoFramesError(
                f"S3 setup failed ({fallback_reason}) and the local fallback found no frames in {frames_root}: "
                "fix the S3 problem, or pass --frames-dir with a local folder of frames."
            ) from exc
        raise
    return plan


def validate_setup(options: StorageOptions, experiment: str, credentials: S3Credentials | None = None) -> StoragePlan:
    """Decide the storage for a run, falling back to local storage when S3 fails and that is allowed.

    `experiment` names the folders whose write permission is probed; `credentials` (from the
    orchestrator's block) replace boto3's standard chain for this run's clients.
    """
    check_cache_dir(options.local_cache_dir)
    if not options.use_s3:
        return local_plan(options)
    try:
        return validate_s3(options, experiment, credentials)
    except PokevqError as exc:
        if options.no_fallback or not isinstance(exc, (StorageError, NoFramesError)):
            raise
        reason = str(exc)
        log.warning(
            "S3 SETUP FAILED, FALLING BACK TO LOCAL STORAGE under %s (frames from local folder %s): %s",
            Path(options.output_dir).resolve(),
            Path(options.frames_dir).resolve(),
            reason,
        )
        return local_plan(options, fallback_reason=reason)
