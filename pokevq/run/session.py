"""What one run keeps in memory between its steps: storage clients, the cache, the manifest, the trainer.

The flow opens a run's session and closes it in one place; each step (a task) receives it
with the results of the steps it depends on. The heavy objects live here so results stay
small values (URIs, counts, metrics). Everything can be rebuilt from storage (manifest,
checkpoints), which is what a retried run does.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from pokevq.config import TrainConfig
from pokevq.data.cache import FrameCache
from pokevq.data.manifest import to_parquet_bytes
from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.dist.group import TrainingGroup
from pokevq.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    ObjectNotFoundError,
    PokevqError,
)
from pokevq.layout import BEST_FILE, STEP_GLOB, epoch_file, step_of
from pokevq.run.inputs import RunInputs
from pokevq.run.lease import Lease, LeaseLostError
from pokevq.run.logs import attach_training_log, detach_training_log
from pokevq.run.nightly import nightly_order
from pokevq.run.resume import fetch_checkpoint, resolve_resume
from pokevq.run.validate import StoragePlan
from pokevq.train.checkpoint import (
    Checkpoint,
    load_checkpoint,
)
from pokevq.train.publish import (
    StepCheckpointPublisher,
    TensorBoardSync,
)
from pokevq.train.stop import LEASE_LOST, SIGTERM, StopRequest
from pokevq.train.trainer import Trainer

log = logging.getLogger(__name__)


def _nightly_key(name: str) -> tuple[str, int]:
    """Order of nightly experiments: by date, then the day's number (`-10` after `-9`); others by name."""
    order = nightly_order(name)
    return order if order is not None else (name.removeprefix("nightly-"), 0)


class RunSession:
    """The live state of one training run, opened and closed by the flow (`with RunSession(...) as run:`)."""

    def __init__(self, config: TrainConfig, plan: StoragePlan, run_id: str = "") -> None:
        self.config = config
        self.plan = plan
        self.run_id = run_id  # the orchestrator's run: a retry of it continues its own mid-epoch checkpoints
        self.inputs = RunInputs(config, plan)  # the cache, source, manifest, annotations and reader: as every rank's
        self.layout = self.inputs.layout
        self.storage = self.inputs.storage
        self.frames_storage = self.inputs.frames_storage
        self.workdir = Path(plan.output_root) / "runs" / str(config.run.experiment_name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "training.log"
        self.log_handler = attach_training_log(self.log_path, config.run.debug)
        self.tensorboard = TensorBoardSync(self.workdir / "tensorboard", self.storage, self.layout.tensorboard)
        self.timings: dict[str, float] = {}
        self._trainer: Trainer | None = None
        self.step_publisher = StepCheckpointPublisher(self.storage, self.layout, guard=self.check_lease)
        self.lease: Lease | None = None
        self.stop = StopRequest()  # SIGTERM and a lost lease end training at the next step boundary
        self._previous_sigterm: Any = None
        self._catch_sigterm()
        self.group: TrainingGroup | None = None  # the other training processes, when there are any
        self._group_quiet = True  # no collective was left half-done (so the ranks can be told to stop)
        fell_back = f" (S3 set-up failed, so LOCAL storage: {plan.fallback_reason})" if plan.fallback_reason else ""
        log.info("Run %s: outputs to %s%s, work directory %s", config.run.experiment_name, plan.describe(), fell_back,
                 self.workdir)
        if config.data.data_path != "auto":
            log.warning("--data-path %s is deprecated and ignored: every run reads its frames one way (units on "
                        "local disk, kept when they fit --max-cache-bytes); drop the option", config.data.data_path)

    # -------------------------------------------------------------- pieces
    @property
    def cache(self) -> FrameCache:
        return self.inputs.cache

    @property
    def source(self) -> FrameSource:
        return self.inputs.source

    @property
    def reader(self) -> BucketReader:
        """How this bucket's frames are read (decided once, before training; a cache below one shard fails here)."""
        return self.inputs.reader

    def save_manifest(self, manifest: pd.DataFrame) -> str:
        self.inputs.manifest = manifest
        if not self.config.run.nightly:  # (a nightly packs the new frames first, which rewrites a bad shard index)
            _ = self.reader  # a bad shard index, or a cache below one shard, stops the run before a write
        self.storage.put_bytes(self.layout.manifest, to_parquet_bytes(manifest))
        return self.storage.uri(self.layout.manifest)

    @property
    def manifest(self) -> pd.DataFrame:
        """The run's manifest, reloaded from storage when this process did not index it."""
        return self.inputs.manifest

    def manifest_at(self, uri: str) -> pd.DataFrame:
        """The manifest `index_manifest` saved at `uri` (kept in memory when this process indexed it)."""
        if uri != self.storage.uri(self.layout.manifest):
            raise ConfigError(f"The manifest {uri} belongs to another run than {self.config.run.experiment_name}")
        return self.manifest

    @property
    def annotations(self) -> dict[str, Any]:
        """Palettes and dialog boxes of the frames when they came with them (pokevq synth), else {}."""
        return self.inputs.annotations

    @property
    def trainer(self) -> Trainer:
        """The trainer as the run starts: fresh, resumed from --resume, or warm-started (nightly)."""
        if self._trainer is None:
            state, name, weights_only = None, "", False
            if self.config.run.resume:
                state, name = resolve_resume(self.config, self.workdir, self.plan.credentials)
                self.tensorboard.restore()
            elif self.config.run.nightly and self.config.run.warm_start:
                found = self.previous_nightly_best()
                if found is None:
                    log.info("Warm start skipped: no earlier nightly experiment has a checkpoint_best.pt")
                else:
                    state, name, weights_only = found[0], found[1], True
            self._start_group()
            self._trainer = self._build_trainer(state, name, weights_only)
        return self._trainer

    def _start_group(self) -> None:
        """With --nproc-per-node or --nnodes, the other training processes start once, here, for the whole run."""
        self.group = TrainingGroup.start(self.config, self.workdir / "ranks")
        if self.group is None:
            return
        setup = {
            "config": self.config.to_dict(), "plan": self.plan.to_dict(), "run_id": self.run_id,
            "cache_dir": str(self.cache.directory),
            # Keys from the orchestrator's block go to this machine's processes only (over loopback); other
            # machines use their own credentials.
            "credentials": self.plan.credentials if self.config.distributed.nnodes == 1 else None,
        }
        self.group.send(setup)

    def _build_trainer(self, state: dict[str, Any] | None, name: str, weights_only: bool = False) -> Trainer:
        common = dict(on_step_checkpoint=self.step_publisher, run_id=self.run_id, stop=self.stop, resume_name=name)
        with self._with_ranks({"kind": "build"}):  # every rank builds it too, and takes this one's state
            if weights_only and state is not None:
                return self.inputs.trainer(self.workdir, init_from=state, **common)
            return self.inputs.trainer(self.workdir, resume_state=state, **common)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train `epoch` (after catching up to the epoch before it) in every training process."""
        trainer = self.trainer_after(epoch - 1)
        with self._with_ranks({"kind": "train", "epoch": epoch}):
            return trainer.train_epoch(epoch).to_dict()

    @contextmanager
    def _with_ranks(self, command: dict[str, Any]) -> Iterator[None]:
        """Send `command` to the other ranks and run the block; a dead rank turns into its one-line story."""
        if self.group is None:
            yield
            return
        self._group_quiet = False
        self.group.send(command)
        with self.group.failures():
            yield
        self._group_quiet = True

    def trainer_after(self, epoch: int) -> Trainer:
        """The trainer positioned right after `epoch`, catching up from that epoch's checkpoint if needed.

        A retried flow run skips epochs whose results are cached; the first epoch it trains
        continues from the previous epoch's checkpoint (the local work file, else the uploaded one).
        """
        trainer = self.trainer
        current = trainer.epoch == epoch and not trainer.interrupted
        if current and (trainer.steps_run or trainer.position):
            return trainer
        # A trainer that has not trained here yet may be a retry of a run that stopped inside the next epoch.
        found = self._mid_epoch_checkpoint(epoch + 1)
        if found is None and current:
            return trainer
        state, name = found if found is not None else self._epoch_checkpoint(epoch)
        trainer.close()
        self.tensorboard.restore()
        self._trainer = self._build_trainer(state, name)
        log.info("Continuing %s after epoch %d from %s", self.config.run.experiment_name, epoch, name)
        return self._trainer

    def _mid_epoch_checkpoint(self, epoch: int) -> tuple[Checkpoint, str] | None:
        """The newest checkpoint this run wrote inside `epoch` (this machine's, else the uploaded one), if any.

        A retried run then continues the interrupted epoch where it stopped, not from its start. Only
        checkpoints of this run count: a new run of the same experiment name trains afresh.
        """
        if not self.run_id:
            return None
        candidates: list[tuple[int, str, Any]] = []
        folder = self.workdir / "checkpoints"
        if folder.is_dir():
            for path in folder.glob(STEP_GLOB):
                if (step := step_of(path.name)) is not None:
                    candidates.append((step, "local", path))
        for info in self.storage.list(self.layout.checkpoints + STEP_GLOB.split("*")[0]):
            if (step := step_of(info.key[len(self.layout.checkpoints):])) is not None:
                candidates.append((step, "storage", info.key))
        for step, where, ref in sorted(candidates, key=lambda c: (c[0], c[1] == "local"), reverse=True):
            try:
                if where == "local":
                    state, name = load_checkpoint(ref, name=str(ref)), str(ref)
                else:
                    state, name = fetch_checkpoint(self.storage, ref, self.workdir / "resume" / f"step_{step}.pt")
            except (CheckpointError, ObjectNotFoundError) as exc:
                log.warning("Not continuing from the mid-epoch checkpoint of step %d: %s", step, exc)
                continue
            position = state.position or {}
            if (state.run_id == self.run_id and state.epoch == epoch - 1
                    and int(position.get("epoch", -1)) == epoch):
                return state, name
        return None

    def _epoch_checkpoint(self, epoch: int) -> tuple[Checkpoint, str]:
        local = self.workdir / "checkpoints" / epoch_file(epoch)
        if local.is_file():
            return load_checkpoint(local, name=str(local)), str(local)
        key = self.layout.checkpoint(epoch)
        target = self.workdir / "resume" / epoch_file(epoch)
        try:
            return fetch_checkpoint(self.storage, key, target)
        except ObjectNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"Checkpoint not found: {self.storage.uri(key)} (needed to continue after epoch {epoch}); "
                "start a new run of the deployment instead of retrying this one."
            ) from exc

    def previous_nightly_best(self) -> tuple[Checkpoint, str] | None:
        """The newest earlier `nightly-*` experiment's best checkpoint, if any (the day's last, on a day's second)."""
        prefix = f"{self.layout.checkpoint_prefix}/nightly-"
        bests = sorted(
            (info.key
             for info in self.storage.list(prefix)
             if info.key.endswith(f"/{BEST_FILE}") and not info.key.startswith(self.layout.checkpoints)),
            key=lambda key: _nightly_key(key.split("/")[-2]),
        )
        own = _nightly_key(str(self.config.run.experiment_name))
        earlier = [key for key in bests if _nightly_key(key.split("/")[-2]) < own]
        if not earlier:
            return None
        key = earlier[-1]
        target = self.workdir / "warm_start" / BEST_FILE
        state, uri = fetch_checkpoint(self.storage, key, target)
        log.info("Warm start from %s", uri)
        return state, uri

    # ---------------------------------------------------------------- lease
    def hold_lease(self, lease: Lease) -> None:
        """Keep the experiment's lease renewed while this run lives; released by close()."""
        self.lease = lease
        if lease.taken_over:
            log.warning("Took over the lease of experiment %s: %s", self.config.run.experiment_name, lease.taken_over)
        lease.start_heartbeat(on_lost=self._lease_lost)

    def _lease_lost(self, exc: LeaseLostError) -> None:
        """Another run holds the lease now: training stops at its next step and writes nothing more."""
        log.warning("%s Stopping at the next step.", exc)
        self.stop.request(LEASE_LOST, exc)

    def check_lease(self) -> None:
        """Before a checkpoint is published: renew the lease, so nothing is written once another run holds it."""
        if self.lease is None:
            return
        try:
            self.lease.renew()
        except LeaseLostError as exc:
            self._lease_lost(exc)
            raise

    def renew_lease(self) -> None:
        """Before each epoch: fail when another run took the lease; a storage hiccup only warns."""
        if self.lease is None:
            return
        try:
            self.lease.renew()
        except LeaseLostError:
            raise
        except PokevqError as exc:
            log.warning("Could not renew the lease on %s now (%s); it is valid until %s",
                        self.config.run.experiment_name, exc, self.lease.describe())

    def release_lease(self) -> None:
        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        try:
            lease.release()
        except Exception as exc:  # noqa: BLE001 - never hide the run's own outcome behind this
            log.warning(
                "Could not release the lease %s (%s): it expires by itself at the time it names, "
                "and a retry of this flow run may take it at once.", lease.uri, exc,
            )

    # ------------------------------------------------------------- SIGTERM
    def _catch_sigterm(self) -> None:
        """While the run lives, SIGTERM (a pod eviction, a spot reclaim) ends training like a budget does."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set a handler; the process keeps its own
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.stop.reason == SIGTERM:  # the second one: no more patience
            self._restore_sigterm()
            signal.raise_signal(signum)
            return
        self.stop.request(SIGTERM)
        log.warning("SIGTERM received: training stops at the next step boundary with a checkpoint and the lease "
                    "is released (send SIGTERM again to stop at once)")

    def _restore_sigterm(self) -> None:
        previous, self._previous_sigterm = self._previous_sigterm, None
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 3)

    # ------------------------------------------------------------ shutdown
    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.step_publisher.close()  # a mid-epoch checkpoint being uploaded finishes first
        if self._trainer is not None:
            self._trainer.close()
        if self.group is not None:
            self.group.close(clean=self._group_quiet)
            self.group = None
        self.inputs.close()
        self.release_lease()
        self._restore_sigterm()
        detach_training_log(self.log_handler)


class Stopwatch:
    """`with Stopwatch(session, "warm_cache"):` adds the block's time to the report."""

    def __init__(self, session: RunSession, stage: str) -> None:
        self.session, self.stage = session, stage

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.session.timed(self.stage, time.perf_counter() - self.started)




