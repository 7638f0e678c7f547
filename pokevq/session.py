"""What one run keeps in memory between its steps: storage clients, the cache, the manifest, the trainer.

The orchestrator runs each step as a task; the heavy objects live here so tasks
exchange only small values (URIs, counts, metrics). Everything can be rebuilt from
storage (manifest, checkpoints), which is what a retried run does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pokevq.cache import FrameCache
from pokevq.checkpoint import load_checkpoint
from pokevq.config import TrainConfig
from pokevq.data import FrameSource
from pokevq.errors import CheckpointNotFoundError, ConfigError, ObjectNotFoundError
from pokevq.layout import Layout
from pokevq.logs import attach_training_log, detach_training_log
from pokevq.manifest import from_parquet_bytes, to_parquet_bytes
from pokevq.storage import FAST_FAIL, S3Storage, storage_for_uri
from pokevq.uploads import TensorBoardSync
from pokevq.validate import StoragePlan

log = logging.getLogger(__name__)


def resolve_resume(config: TrainConfig, workdir: Path) -> tuple[dict[str, Any], str]:
    """Fetch the checkpoint named by `--resume` (s3:// URI or local path) and load it safely."""
    uri = str(config.resume)
    try:
        storage, key = storage_for_uri(uri, region=str(config.s3_region), endpoint_url=config.s3_endpoint_url)
    except ConfigError as exc:
        raise CheckpointNotFoundError(f"Checkpoint not found: {uri} ({exc})") from exc
    local = workdir / "resume" / Path(key).name
    try:
        storage.download_file(key, local)
    except ObjectNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"Checkpoint not found: {uri}. List what exists with `aws s3 ls` on the checkpoints prefix."
        ) from exc
    return load_checkpoint(local, name=uri), uri


def check_resume_exists(config: TrainConfig) -> None:
    """Fail before any heavy work when the checkpoint to resume from is missing."""
    if not config.resume:
        return
    uri = str(config.resume)
    try:
        storage, key = storage_for_uri(
            uri, region=str(config.s3_region), endpoint_url=config.s3_endpoint_url, **FAST_FAIL
        )
    except ConfigError as exc:
        raise CheckpointNotFoundError(f"Checkpoint not found: {uri} ({exc})") from exc
    if storage.exists(key):
        return
    if isinstance(storage, S3Storage):
        storage.list_one(key)  # a HEAD cannot tell a missing bucket from a missing key; a listing can
    raise CheckpointNotFoundError(f"Checkpoint not found: {uri}")


class RunSession:
    """The live state of one training run."""

    def __init__(self, config: TrainConfig, plan: StoragePlan) -> None:
        self.config = config
        self.plan = plan
        self.layout = Layout.for_config(config)
        self.workdir = Path(plan.output_root) / "runs" / str(config.experiment_name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = plan.output_storage()
        self.frames_storage = plan.frames_storage()
        self.log_path = self.workdir / "training.log"
        self.log_handler = attach_training_log(self.log_path, config.debug)
        self.tensorboard = TensorBoardSync(self.workdir / "tensorboard", self.storage, self.layout.tensorboard)
        self.timings: dict[str, float] = {}
        self._cache: FrameCache | None = None
        self._manifest: pd.DataFrame | None = None
        self._trainer: Any = None
        log.info("Run %s: outputs to %s, work directory %s", config.experiment_name, plan.describe(), self.workdir)

    # -------------------------------------------------------------- pieces
    @property
    def cache(self) -> FrameCache:
        if self._cache is None:
            self._cache = FrameCache(
                self.config.local_cache_dir, max_items=self.config.max_cache_size, max_bytes=self.config.max_cache_bytes
            )
        return self._cache

    @property
    def source(self) -> FrameSource:
        return FrameSource(self.frames_storage, self.cache)

    def save_manifest(self, manifest: pd.DataFrame) -> str:
        self._manifest = manifest
        self.storage.put_bytes(self.layout.manifest, to_parquet_bytes(manifest))
        return self.storage.uri(self.layout.manifest)

    @property
    def manifest(self) -> pd.DataFrame:
        """The run's manifest, reloaded from storage when this process did not index it."""
        if self._manifest is None:
            self._manifest = from_parquet_bytes(self.storage.get_bytes(self.layout.manifest))
        return self._manifest

    @property
    def trainer(self) -> Any:
        """The trainer as the run starts: fresh, resumed from --resume, or warm-started (nightly)."""
        if self._trainer is None:
            state, name, weights_only = None, "", False
            if self.config.resume:
                state, name = resolve_resume(self.config, self.workdir)
                self.tensorboard.restore()
            elif self.config.nightly and self.config.warm_start:
                found = self.previous_nightly_best()
                if found is None:
                    log.info("Warm start skipped: no earlier nightly experiment has a checkpoint_best.pt")
                else:
                    state, name, weights_only = found[0], found[1], True
            self._trainer = self._build_trainer(state, name, weights_only)
        return self._trainer

    def _build_trainer(self, state: dict[str, Any] | None, name: str, weights_only: bool = False) -> Any:
        from pokevq.training import Trainer

        if weights_only and state is not None:
            return Trainer(self.config, self.manifest, self.source, self.workdir, init_from=state, resume_name=name)
        return Trainer(self.config, self.manifest, self.source, self.workdir, state, name)

    def trainer_after(self, epoch: int) -> Any:
        """The trainer positioned right after `epoch`, catching up from that epoch's checkpoint if needed.

        A retried flow run skips epochs whose results are cached; the first epoch it trains
        continues from the previous epoch's checkpoint (the local work file, else the uploaded one).
        """
        trainer = self.trainer
        if trainer.epoch == epoch:
            return trainer
        state, name = self._epoch_checkpoint(epoch)
        trainer.close()
        self.tensorboard.restore()
        self._trainer = self._build_trainer(state, name)
        log.info("Continuing %s after epoch %d from %s", self.config.experiment_name, epoch, name)
        return self._trainer

    def _epoch_checkpoint(self, epoch: int) -> tuple[dict[str, Any], str]:
        local = self.workdir / "checkpoints" / f"checkpoint_epoch_{epoch}.pt"
        if local.is_file():
            return load_checkpoint(local, name=str(local)), str(local)
        key = self.layout.checkpoint(epoch)
        target = self.workdir / "resume" / f"checkpoint_epoch_{epoch}.pt"
        try:
            self.storage.download_file(key, target)
        except ObjectNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"Checkpoint not found: {self.storage.uri(key)} (needed to continue after epoch {epoch}); "
                "start a new run of the deployment instead of retrying this one."
            ) from exc
        return load_checkpoint(target, name=self.storage.uri(key)), self.storage.uri(key)

    def previous_nightly_best(self) -> tuple[dict[str, Any], str] | None:
        """The newest earlier `nightly-*` experiment's best checkpoint, if any."""
        prefix = f"{self.layout.checkpoint_prefix}/nightly-"
        bests = sorted(
            info.key
            for info in self.storage.list(prefix)
            if info.key.endswith("/checkpoint_best.pt") and not info.key.startswith(self.layout.checkpoints)
        )
        earlier = [key for key in bests if key.split("/")[-2] < str(self.config.experiment_name)]
        if not earlier:
            return None
        key = earlier[-1]
        target = self.workdir / "warm_start" / "checkpoint_best.pt"
        self.storage.download_file(key, target)
        log.info("Warm start from %s", self.storage.uri(key))
        return load_checkpoint(target, name=self.storage.uri(key)), self.storage.uri(key)

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 3)

    # ------------------------------------------------------------ shutdown
    def close(self) -> None:
        if self._trainer is not None:
            self._trainer.close()
        if self._cache is not None:
            self._cache.close()
        detach_training_log(self.log_handler)


class Stopwatch:
    """`with Stopwatch(session, "warm_cache"):` adds the block's time to the report."""

    def __init__(self, session: RunSession, stage: str) -> None:
        self.session, self.stage = session, stage

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.session.timed(self.stage, time.perf_counter() - self.started)




