"""The training loop: one epoch at a time, so the orchestrator can checkpoint between epochs.

Read top to bottom: device and seeding → model and optimizer → data → resume →
one epoch of training → evaluation on the validation episodes → TensorBoard →
best-so-far → a local checkpoint file that the upload step publishes.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pokevq import settings
from pokevq.config import TrainConfig
from pokevq.data.batch import Batch
from pokevq.data.frames import decode_frame
from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.data.streaming import shutdown_workers
from pokevq.dist import collectives
from pokevq.errors import (
    CheckpointError,
    ConfigError,
    FrameDecodeError,
    NoFramesError,
    OutputDirError,
    StorageError,
)
from pokevq.layout import epoch_file, step_file
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.run.logs import CONSOLE
from pokevq.train.baselines import TileDictionary, fit_baselines
from pokevq.train.checkpoint import (
    Checkpoint,
    build_checkpoint,
    check_model_shape,
    model_shape_differences,
    restore_rng,
)
from pokevq.train.metrics import EpochMetrics, QualityMetrics
from pokevq.train.preview import image_grid
from pokevq.train.schedule import learning_rate_at
from pokevq.train.stop import StopRequest

log = logging.getLogger(__name__)

PREVIEW_FRAMES = 8
MAX_SKIPPED_KEPT = 10_000  # skipped-frame reasons carried in checkpoints, so a resumed report still lists them
READ_THREADS = 16  # concurrent reads of the frames outside the epochs (seeding, baselines, previews)
# Training frames a patch codebook is seeded from and the baseline dictionaries are built from: the same frames,
# so the report compares like with like (seeding holds them decoded: 69 KB each at 144x160).
SAMPLE_TRAIN_FRAMES = 4096
BASELINE_VAL_FRAMES = 1000  # validation frames they are scored on (each rank's first ones, in episode order)
STALL_WARNING = 0.20  # an epoch that waited longer than this share of its time for data says what to do


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present; asking for a missing device is a clear error.

    In several processes on one machine, each takes the GPU of its local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device (--device) cuda was requested but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device (--device) mps was requested but MPS is not available; use --device auto or cpu")
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"nproc_per_node (--nproc-per-node) asks for GPU {local_rank} but this machine has "
                              f"{torch.cuda.device_count()}; use --nproc-per-node auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


class _TensorBoardFiles:
    """TensorBoard's writer, whose failure to write its files (a full disk) ends the run with one line."""

    def __init__(self, writer: Any, directory: Path) -> None:
        self._writer, self.directory = writer, directory
        _quiet_tensorboard_thread()

    def _write(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self._writer, method)(*args, **kwargs)
        except OSError as exc:  # raised here, or kept by its writer thread until the next call
            raise OutputDirError(f"Cannot write TensorBoard files in {self.directory}: {exc.strerror or exc}. "
                                 "Free disk space or pass another --output-dir.") from exc

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        self._write("add_scalar", *args, **kwargs)

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        self._write("add_image", *args, **kwargs)

    def flush(self) -> None:
        self._write("flush")

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError as exc:  # closing never hides the run's own outcome
            log.warning("TensorBoard files in %s may be incomplete: %s", self.directory, exc.strerror or exc)


def _quiet_tensorboard_thread() -> None:
    """TensorBoard's writer thread keeps a write error for the writer's next call, then re-raises it, and Python
    prints that thread's traceback: the error reaches the run once, as one line (`_TensorBoardFiles`), instead."""
    previous = threading.excepthook
    if getattr(previous, "pokevq_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.pokevq_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class _NoWriter:
    """TensorBoard for the ranks that do not write (every rank but 0)."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None: ...

    def add_image(self, *args: Any, **kwargs: Any) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class EpochResult:
    """What one epoch produced: small and JSON-able, so a task can return and persist it."""

    epoch: int
    global_step: int
    train: dict[str, float]
    val: dict[str, float]
    is_best: bool
    best_epoch: int
    best_loss: float
    checkpoint_path: str
    checkpoint_sha256: str
    seconds: float
    frames_per_second: float
    cache_hits: int
    cache_misses: int
    skipped_new: list[tuple[str, str]] = field(default_factory=list)
    data_wait_seconds: float = 0.0  # time the training loop waited for its next batch
    data_stall: float = 0.0  # that wait as a share of the training loop's time
    data_path: str = ""  # where the frames came from and what stays on local disk (`BucketReader.describe`)
    partial: bool = False  # the epoch stopped early at a step boundary (a budget): its checkpoint is a step's
    stopped_by: str | None = None  # what ended training: "max_steps", "time_budget" or "sigterm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quality_summary(val: dict[str, Any]) -> str:
    """`pixel accuracy 99.91% dialog 99.80% stability 100.0%` for the epoch's log line."""
    parts = [
        f"{label} {100 * val[name]:.2f}%"
        for name, label in (("pixel_accuracy", "pixel accuracy"), ("dialog_accuracy", "dialog"),
                            ("token_stability", "stability"))
        if name in val
    ]
    return (" " + " ".join(parts)) if parts else ""


class Trainer:
    """Owns the model, optimizer, loaders and TensorBoard writer for one experiment."""

    def __init__(
        self,
        config: TrainConfig,
        manifest: pd.DataFrame,
        source: FrameSource,
        workdir: str | Path,
        resume_state: Checkpoint | None = None,
        resume_name: str = "checkpoint",
        init_from: Checkpoint | None = None,
        annotations: dict[str, Any] | None = None,
        reader: BucketReader | None = None,
        on_step_checkpoint: Any = None,
        run_id: str = "",
        sample_frames: int = SAMPLE_TRAIN_FRAMES,
        baseline_frames: int | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        self.config = config
        self.stop = stop  # asked from outside the loop (SIGTERM, a lost lease): stop at the next step boundary
        self.started = time.monotonic()  # the time budget counts from here
        self.run_id = run_id  # written into mid-epoch checkpoints: a retry of this run continues from them
        self.steps_run = 0  # steps trained by this process
        self.workdir = Path(workdir)
        # In several processes (pokevq.dist), each rank trains on its share of every batch and rank 0 alone writes.
        self.rank, self.world_size = collectives.rank(), collectives.world_size()
        self.writes = self.rank == 0
        self.rank_batch = collectives.rank_batch_size(config.batch_size, self.world_size)
        self.device = select_device(config.device, collectives.local_rank())
        # bf16 autocast on CUDA by default; `--precision bf16` on the CPU is the same step, as CI runs it.
        self.use_amp = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        torch.manual_seed(config.seed)
        random.seed(config.seed)

        self.model_config = ModelConfig.for_run(config)
        self.model = VQVAE(self.model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate)

        train_rows = manifest[manifest["split"] == "train"]
        val_rows = manifest[manifest["split"] == "val"]
        self.reader = reader or BucketReader.decide(manifest, source, max_bytes=config.max_cache_bytes)
        self.position: dict[str, Any] | None = None  # where a resumed epoch continues
        self.on_step_checkpoint = on_step_checkpoint  # called with (path, sha256, global_step) after each one
        pin = self.device.type == "cuda"
        common = dict(batch_size=self.rank_batch, seed=config.seed, num_workers=config.num_workers, pin_memory=pin,
                      rank=self.rank, world_size=self.world_size)
        self.train_loader = self.reader.loader(train_rows, source, config.image_hw, shuffle=True, **common)
        self.val_loader = (
            self.reader.loader(val_rows, source, config.image_hw, shuffle=False, **common)
            if len(val_rows)
            else None
        )
        self.preview_rows = (val_rows if len(val_rows) else train_rows).head(PREVIEW_FRAMES)
        self.sample_rows = train_rows.sample(n=min(sample_frames, len(train_rows)), random_state=config.seed)
        # The baselines come from the same frames unless told otherwise (0: none, for a caller that scores its own).
        self.baseline_rows = self.sample_rows if baseline_frames is None else train_rows.sample(
            n=min(baseline_frames, len(train_rows)), random_state=config.seed)
        self.baselines: dict[str, dict[str, Any]] | None = None  # tile dictionaries' figures, once per experiment
        self.model_on_baseline_frames: dict[str, Any] | None = None  # this epoch's model on the same frames
        self.source = source
        # What the validation metrics need per frame: its episode (token stability) and, where the
        # frames came with annotations (pokevq synth), the game's palette and the dialog box.
        self.annotations = annotations or {}
        episodes = val_rows["game"].astype(str) + "/" + val_rows["episode"].astype(str)
        self.val_episodes = dict(zip(val_rows["key"], episodes))

        self.epoch = 0
        self.global_step = 0
        self.interrupted = False
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.skipped: dict[str, str] = {}
        if resume_state is not None:
            self._restore(resume_state, resume_name)
        elif init_from is not None:
            self._warm_start(init_from, resume_name)
        if self.model.needs_seeding and self.writes:
            self._seed_codebook()
        if self.world_size > 1:
            self._share_state()

        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard_dir = self.workdir / "tensorboard"
        self.writer: Any = _TensorBoardFiles(SummaryWriter(
            log_dir=str(self.tensorboard_dir),
            purge_step=self.global_step + 1 if resume_state is not None else None,
        ), self.tensorboard_dir) if self.writes else _NoWriter()
        # The step runs through DDP in several processes (gradients all-reduced); the codebook keeps itself
        # identical across ranks (pokevq.model.quantizers), so buffers need no broadcast per step.
        self.step_model: torch.nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # 1x1 convolutions' gradients differ from DDP's buckets only in the strides of size-1 dimensions.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.step_model = DistributedDataParallel(self.model, device_ids=device_ids, forward_sync_buffers=False)
        parameters = sum(p.numel() for p in self.model.parameters())
        log.info(
            "Model: VQ-VAE %s, %.2fM parameters, on %s%s%s",
            config.image_size,
            parameters / 1e6,
            self.device,
            " (bf16 autocast)" if self.use_amp else " (fp32)",
            f", {self.world_size} processes (DDP), {self.rank_batch} frames each per step" if self.world_size > 1
            else "",
        )

    # ---------------------------------------------------------------- resume
    def _restore(self, state: Checkpoint, name: str) -> None:
        check_model_shape(state, self.model_config.to_dict(), name)
        try:
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"Checkpoint {name} does not match the configured model: {first}") from exc
        for group in self.optimizer.param_groups:  # the configured learning rate wins over the saved one
            group["lr"] = self.config.learning_rate
        self.epoch = state.epoch
        self.global_step = state.global_step
        self.history = list(state.history)
        self.best = state.best
        self.skipped = dict(state.skipped)
        self.baselines = next((r["baselines"] for r in reversed(self.history) if r.get("baselines")), None)
        self.position = state.position or None
        if self.position and self.position.get("kind", "cached") != "streaming":
            log.warning("Checkpoint %s stopped mid-epoch on the data path of an earlier pokevq, whose position this "
                        "one cannot follow: epoch %d starts again from its first batch (the weights are kept)",
                        name, self.epoch + 1)
            self.position = None
        if state.rng:
            restore_rng(state.rng)
        if self.position:
            log.info("Resumed from %s: in epoch %d after global step %d", name, self.epoch + 1, self.global_step)
        else:
            log.info("Resumed from %s: epoch %d, global step %d", name, self.epoch, self.global_step)

    def _share_state(self) -> None:
        """Every rank starts from rank 0's weights, codebook, optimizer, position and random state."""
        state = None
        if self.writes:
            state = build_checkpoint(self.model, self.optimizer, epoch=self.epoch, global_step=self.global_step,
                                     config=self.config.masked(), model_config=self.model_config.to_dict(),
                                     metrics={}, history=self.history, best=self.best, position=self.position,
                                     skipped=dict(list(self.skipped.items())[:MAX_SKIPPED_KEPT]))
        state = collectives.from_first(state)
        if not self.writes:
            self._restore(state, "rank 0")

    def _warm_start(self, state: Checkpoint, name: str) -> None:
        """Model weights (and codebook) only: a new experiment that starts from a good place.

        When the model options changed since that checkpoint (a new architecture, say), the
        nightly trains from scratch rather than fail: the options are the newer decision.
        """
        different = model_shape_differences(state, self.model_config.to_dict())
        if different:
            log.warning("Warm start skipped, training from scratch: Checkpoint %s does not match the configured "
                        "model: %s", name, ", ".join(different))
            return
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"Checkpoint {name} does not match the configured model: {exc}") from exc
        log.info("Warm-started the model from %s (epoch %s of that experiment)", name, state.get("epoch"))

    @property
    def start_epoch(self) -> int:
        return self.epoch + 1

    # ------------------------------------------------------------ one epoch
    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def _account(self, batch: Batch, counters: dict[str, Any]) -> None:
        counters["hits"] += batch.hits
        counters["misses"] += batch.misses
        for key, reason in batch.skipped:
            if key not in self.skipped:
                self.skipped[key] = reason
                counters["skipped_new"].append((key, reason))
                log.warning("Skipped frame %s: %s", key, reason)

    def train_epoch(self, epoch: int) -> EpochResult:
        """Train one epoch (or what is left of it), evaluate, log to TensorBoard and write a local checkpoint.

        With `checkpoint_every_steps`, a resumable checkpoint that records the loader's position is
        written every N steps; with `max_steps` or `time_budget`, or when `stop` is requested (SIGTERM),
        the epoch ends early at a step boundary with such a checkpoint, and the result says so (`partial`,
        `stopped_by`). A request that carries an error (a lost lease) raises it there and writes nothing.
        """
        from tqdm.auto import tqdm

        if epoch != self.epoch + 1:
            raise RuntimeError(f"epoch {epoch} requested after epoch {self.epoch}")
        started = time.perf_counter()
        counters: dict[str, Any] = {"hits": 0, "misses": 0, "skipped_new": []}
        metrics = EpochMetrics(self.model_config.codebook_size)
        self.model.train()
        position = self.position if self.position and int(self.position.get("epoch", -1)) == epoch else None
        self.train_loader.set_epoch(epoch, position)
        tracker = self.train_loader.tracker(epoch)
        steps = len(self.train_loader)
        log_every = max(1, steps // 10)
        every = self.config.checkpoint_every_steps
        frame_log = _open_frame_log()
        train_frames = 0
        train_seconds = 0.0
        stopped_by: str | None = None
        # One iterator, handed to tqdm: tqdm.auto's iterator would start the DataLoader's epoch twice (its asyncio
        # flavour calls iter() up front, then iterates the loader again), throwing away the workers' first batches.
        batches = iter(self.train_loader)
        progress = tqdm(batches, total=steps, desc=f"epoch {epoch}/{self.config.num_epochs}", unit="batch",
                        disable=None)
        step_started = time.perf_counter()
        data_wait = 0.0  # time spent waiting for the next batch: the input pipeline's stall
        loop_started = waiting_since = time.perf_counter()
        self.interrupted = True  # until the epoch ends: a trainer left mid-epoch must be rebuilt from a checkpoint
        for number, batch in enumerate(progress):
            data_wait += time.perf_counter() - waiting_since
            self._account(batch, counters)
            tracker.advance(batch)
            # Every rank steps together: a batch whose frames were all unreadable on one rank skips the step on all.
            if collectives.smallest(len(batch.keys), self.device) == 0:
                waiting_since = time.perf_counter()
                continue
            images = batch.pixels(self.device)
            with self._autocast():
                out = self.step_model(images)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self._set_learning_rate(steps)
            self.optimizer.step()
            self.global_step += 1
            self.steps_run += 1
            metrics.update(out.recon.detach().float(), images, out.codes, out.loss.detach(), images.shape[0])
            if frame_log is not None:
                frame_log.write("".join(f"{epoch} {self.global_step} {key}\n" for key in batch.keys))
                frame_log.flush()
            now = time.perf_counter()
            train_seconds += now - step_started
            train_frames += images.shape[0]
            step_started = now
            if self.global_step % log_every == 0 or self.global_step == 1:
                loss = float(out.loss.detach())
                self.writer.add_scalar("train/loss", loss, self.global_step)
                self.writer.add_scalar("train/recon_loss", float(out.recon_loss.detach()), self.global_step)
                self.writer.add_scalar("train/commit_loss", float(out.commit_loss.detach()), self.global_step)
                self.writer.add_scalar("train/batch_perplexity", float(out.perplexity), self.global_step)
                self.writer.add_scalar("train/learning_rate", self.optimizer.param_groups[0]["lr"], self.global_step)
                speed = train_frames / max(train_seconds, 1e-9)
                self.writer.add_scalar("train/frames_per_second", speed, self.global_step)
                progress.set_postfix(loss=f"{loss:.4f}")
            stopped_by = self._stop_reason()
            # One rank's clock or signal stops them all; only rank 0 hears a signal or loses the lease.
            if self.world_size > 1 and collectives.any_rank(stopped_by is not None, self.device):
                stopped_by = stopped_by or "time_budget"
            if stopped_by is not None:
                break
            if every and self.global_step % every == 0 and number + 1 < steps:
                self._step_checkpoint(epoch, tracker.position())
                step_started = time.perf_counter()
            waiting_since = time.perf_counter()
        loop_seconds = time.perf_counter() - loop_started
        progress.close()
        if frame_log is not None:
            frame_log.close()
        if stopped_by is not None and self.stop is not None and self.stop.error is not None:
            raise self.stop.error  # a lost lease: no checkpoint, the experiment is another run's now
        if self.world_size > 1:
            metrics, counters, train_frames, train_seconds, data_wait, loop_seconds = self._merge_ranks(
                metrics, counters, train_frames, train_seconds, data_wait, loop_seconds)
        if train_frames == 0 and stopped_by is None and position is None:
            raise NoFramesError(
                f"Epoch {epoch} had no readable training frames ({len(self.skipped)} skipped): "
                "check the frames under --frames-dir (see the skipped-frame warnings above)."
            )
        train = metrics.compute() if train_frames else {"loss": float("nan"), "psnr": float("nan"),
                                                        "perplexity": 0.0, "codebook_usage": 0.0}
        val = self.evaluate(counters) if self.val_loader is not None else {}
        seconds = time.perf_counter() - started
        frames_per_second = train_frames / max(train_seconds, 1e-9)
        stall = data_wait / max(loop_seconds, 1e-9)
        partial = stopped_by is not None
        if not partial:
            self.epoch = epoch
            self.position = None

        selection_loss = val.get("loss", train["loss"])
        is_best = not partial and (self.best is None or selection_loss < self.best["loss"])
        if is_best:
            self.best = {"epoch": epoch, "loss": selection_loss}
        lookups = counters["hits"] + counters["misses"]
        hit_rate = counters["hits"] / lookups if lookups else 0.0
        record = {
            "epoch": epoch,
            "global_step": self.global_step,
            "train": train,
            "val": val,
            "seconds": round(seconds, 3),
            "frames_per_second": round(frames_per_second, 2),
            "cache_hit_rate": round(hit_rate, 4),
            "skipped_total": len(self.skipped),
            "data_stall": round(stall, 4),
            "data_path": self.reader.describe(),
        }
        if self.model_on_baseline_frames:
            record["val_on_baseline_frames"] = self.model_on_baseline_frames
        if self.baselines and not partial and not any(r.get("baselines") for r in self.history):
            record["baselines"] = self.baselines  # the first complete epoch keeps them in the history
            for name, figures in self.baselines.items():
                for metric in ("psnr", "pixel_accuracy", "dialog_accuracy"):
                    if metric in figures:
                        self.writer.add_scalar(f"baselines/{name.replace(' ', '_')}_{metric}", figures[metric], epoch)
        if partial:
            record["partial"] = True
        else:
            self.history.append(record)
        self.writer.add_scalar("epoch/data_stall_fraction", stall, epoch)
        self._log_epoch(record)
        if partial:
            path, digest = self._step_checkpoint(epoch, tracker.position(), notify=False)
        else:
            path = self.workdir / "checkpoints" / epoch_file(epoch)
            digest = self._save(path, epoch, {"train": train, "val": val})
        self.interrupted = False
        log.log(
            logging.INFO if self.writes else logging.DEBUG,
            "Epoch %d/%d%s: train loss %.5f psnr %.2f dB | val loss %s psnr %s%s | perplexity %.1f usage %.0f%% | "
            "%.1f frames/s | data stall %.0f%% | cache hit rate %.0f%%%s",
            epoch,
            self.config.num_epochs,
            f" (stopped at step {self.global_step}: {stopped_by})" if partial else "",
            train["loss"],
            train["psnr"],
            f"{val['loss']:.5f}" if val else "n/a",
            f"{val['psnr']:.2f} dB" if val else "n/a",
            _quality_summary(val),
            (val or train)["perplexity"],
            100 * (val or train)["codebook_usage"],
            frames_per_second,
            100 * stall,
            100 * hit_rate,
            " (new best)" if is_best else "",
            extra=CONSOLE,
        )
        if stall > STALL_WARNING and train_frames and self.writes:
            log.warning(
                "Epoch %d waited for data %.0f%% of its time (%s): %s", epoch, 100 * stall,
                self.reader.describe(), _stall_advice(self.reader, self.config.num_workers),
            )
        return EpochResult(
            epoch=epoch,
            global_step=self.global_step,
            train=train,
            val=val,
            is_best=is_best,
            best_epoch=int(self.best["epoch"]) if self.best else 0,
            best_loss=float(self.best["loss"]) if self.best else float("nan"),
            checkpoint_path=str(path),
            checkpoint_sha256=digest,
            seconds=round(seconds, 3),
            frames_per_second=round(frames_per_second, 2),
            cache_hits=counters["hits"],
            cache_misses=counters["misses"],
            skipped_new=counters["skipped_new"],
            data_wait_seconds=round(data_wait, 3),
            data_stall=round(stall, 4),
            data_path=self.reader.describe(),
            partial=partial,
            stopped_by=stopped_by,
        )

    def _set_learning_rate(self, steps_per_epoch: int) -> None:
        """The schedule's rate for this step; a function of the global step, so resuming keeps the curve."""
        config = self.config
        rate = learning_rate_at(self.global_step, peak=config.learning_rate, schedule=config.lr_schedule,
                                warmup_steps=config.warmup_steps, total_steps=config.num_epochs * steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _stop_reason(self) -> str | None:
        """Why training stops after this step, if it does: a budget spent, or a request from outside the loop."""
        if self.config.max_steps and self.global_step >= self.config.max_steps:
            return "max_steps"
        budget = self.config.time_budget_seconds
        if budget is not None and time.monotonic() - self.started >= budget:
            return "time_budget"
        return self.stop.reason if self.stop is not None else None

    def _merge_ranks(self, metrics: EpochMetrics, counters: dict[str, Any], frames: int, seconds: float,
                     wait: float, loop: float) -> tuple[EpochMetrics, dict[str, Any], int, float, float, float]:
        """The epoch over every rank: metrics and counts summed, skipped frames joined, time of the slowest rank."""
        mine = {"metrics": metrics.state(), "counts": counters, "frames": frames, "seconds": seconds, "wait": wait,
                "loop": loop}
        everyone = collectives.gather_objects(mine)
        merged = EpochMetrics(self.model_config.codebook_size)
        for part in everyone:
            merged.merge(part["metrics"])
        joined: dict[str, Any] = {"hits": 0, "misses": 0, "skipped_new": []}
        self._join_counts([part["counts"] for part in everyone], joined)
        slowest = max(everyone, key=lambda part: part["loop"])
        return (merged, joined, sum(p["frames"] for p in everyone), max(p["seconds"] for p in everyone),
                slowest["wait"], slowest["loop"])

    def _save(self, path: Path, epoch: int, metrics: dict[str, Any], position: dict[str, Any] | None = None) -> str:
        if not self.writes:
            return ""  # rank 0 alone writes checkpoints
        return build_checkpoint(
            self.model, self.optimizer, epoch=epoch, global_step=self.global_step, config=self.config.masked(),
            model_config=self.model_config.to_dict(), metrics=metrics, history=self.history, best=self.best,
            position=position, run_id=self.run_id if position is not None else "",
            skipped=dict(list(self.skipped.items())[:MAX_SKIPPED_KEPT]),
        ).save(path)

    def _step_checkpoint(self, epoch: int, position: dict[str, Any], notify: bool = True) -> tuple[Path, str]:
        """A checkpoint inside `epoch`: the epochs before it are complete, `position` says how far this one got."""
        path = self.workdir / "checkpoints" / step_file(self.global_step)
        digest = self._save(path, epoch - 1, {}, position)
        if not self.writes:
            return path, digest
        log.info("Mid-epoch checkpoint at step %d (epoch %d): %s", self.global_step, epoch, path.name)
        if notify and self.on_step_checkpoint is not None:
            self.on_step_checkpoint(path, digest, self.global_step)
        return path, digest

    @torch.no_grad()
    def evaluate(self, counters: dict[str, Any]) -> dict[str, float]:
        """Metrics over the whole validation split (perplexity and usage over the epoch, not per batch).

        The tile dictionaries and the model are also scored on the same first validation frames of every rank
        (`BASELINE_VAL_FRAMES` in all), so the report compares them on the same frames at any world size.
        """
        assert self.val_loader is not None
        self.model.eval()
        size, down = self.model_config.codebook_size, self.model_config.downsample
        dictionaries = self._shared_baselines() if collectives.from_first(self.baselines is None) else []
        scores = {d.name: QualityMetrics(d.size, d.tile) for d in dictionaries}
        # The model's figures in two parts, merged for the split: `head` holds the frames the dictionaries see.
        head, rest = QualityMetrics(size, down), QualityMetrics(size, down)
        limit, scored = -(-BASELINE_VAL_FRAMES // self.world_size), 0
        mine: dict[str, Any] = {"hits": 0, "misses": 0, "skipped_new": []}
        for batch in self.val_loader:
            self._account(batch, mine)
            images = batch.pixels(self.device)
            if images is None:
                continue
            with self._autocast():
                out = self.model(images)
            known = [self.annotations.get(key) for key in batch.keys]
            context = dict(
                palettes=[a.palette if a is not None else None for a in known],
                dialog_boxes=[a.box_at(self.config.image_hw) if a is not None else None for a in known],
                sequences=[self.val_episodes.get(key, key) for key in batch.keys],
            )
            if scored >= limit:
                if not rest.frames:
                    rest.follow(head)
                rest.update(out.recon.float(), images, out.codes, out.loss, images.shape[0], **context)
            else:
                head.update(out.recon.float(), images, out.codes, out.loss, images.shape[0], **context)
                for dictionary in dictionaries:
                    codes = dictionary.encode(images)
                    recon = dictionary.decode(codes)
                    loss = torch.nn.functional.mse_loss(recon, images.float())
                    scores[dictionary.name].update(recon, images, codes, loss, images.shape[0], **context)
                scored += images.shape[0]
        self.model.train()
        part = ({"head": head.state(), "rest": rest.state(),
                 **{f"baseline {name}": score.state() for name, score in scores.items()}}, mine)
        parts = collectives.gather_objects(part) if self.world_size > 1 else [part]  # each rank's share

        def merged(*names: str, codes: int = size, tile: int = down) -> QualityMetrics:
            joined = QualityMetrics(codes, tile)
            for states, _ in parts:
                for name in names:
                    joined.merge(states[name])
            return joined

        if dictionaries:
            self.baselines = {d.name: {**merged(f"baseline {d.name}", codes=d.size, tile=d.tile).compute(),
                                       "codes": d.size} for d in dictionaries}
        self.model_on_baseline_frames = merged("head").compute() if self.baselines else None
        self._join_counts([counts for _, counts in parts], counters)
        return merged("head", "rest").compute()

    def _join_counts(self, parts: list[dict[str, Any]], into: dict[str, Any]) -> None:
        """Every rank's cache hits and newly skipped frames (`parts` in rank order) added to `into`.

        This rank's own skipped frames are already known (`_account`); another rank's count as new
        only when no rank skipped them before.
        """
        for index, part in enumerate(parts):
            into["hits"] += part["hits"]
            into["misses"] += part["misses"]
            for key, reason in part["skipped_new"]:
                if index == self.rank or key not in self.skipped:
                    self.skipped.setdefault(key, reason)
                    into["skipped_new"].append((key, reason))

    def _shared_baselines(self) -> list[TileDictionary]:
        """Rank 0's tile dictionaries on every rank (fitted once, where the previews and TensorBoard are)."""
        found = self._fit_baselines() if self.writes else []
        shared = collectives.from_first([(d.name, d.tiles.cpu(), d.tile) for d in found])
        return [TileDictionary(name, tiles.to(self.device), tile) for name, tiles, tile in shared]

    def _fit_baselines(self) -> list[TileDictionary]:
        """k-means and exact tile dictionaries of a sample of training frames: what the model must beat."""
        started = time.perf_counter()
        batches = (batch.to(self.device) for batch in self._frame_batches(self.baseline_rows))
        found = fit_baselines(batches, self.model_config.codebook_size, self.model_config.downsample,
                              self.config.seed)
        log.info("Baseline tile dictionaries from %d training frames in %.1f s: %s", len(self.baseline_rows),
                 time.perf_counter() - started, ", ".join(f"{d.name} ({d.size} tiles)" for d in found))
        return found

    def _seed_codebook(self) -> None:
        """A patch codebook starts as the training frames' patches at every offset (pokevq.model.patches)."""
        started = time.perf_counter()
        filled = self.model.seed_codebook(self._frame_batches(self.sample_rows))
        log.info("Seeded %d of %d codes from the patches of %d training frames in %.1f s", filled,
                 self.model_config.codebook_size, len(self.sample_rows), time.perf_counter() - started)

    def _frame_batches(self, rows: pd.DataFrame, size: int = 64) -> Any:
        """`_readable_frames` in batches of (size,C,H,W) on the CPU."""
        images = []
        for image in self._readable_frames(rows):
            images.append(image)
            if len(images) == size:
                yield torch.stack(images)
                images = []
        if images:
            yield torch.stack(images)

    def _readable_frames(self, rows: pd.DataFrame, keep: bool = False) -> Any:
        """Decoded frames of `rows`, read through the source on threads; an unreadable frame is left out. Frames
        read once (seeding, baselines) stay out of the cache unless `keep`: the epochs' data path owns its room."""
        def read(pair: tuple[str, str]) -> bytes | None:
            try:
                return self.source.read(*pair, keep=keep)[0]
            except StorageError:
                return None

        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            for data in pool.map(read, zip(rows["key"], rows["etag"].astype(str))):
                try:
                    if data is not None:
                        yield decode_frame(data, self.config.image_hw)
                except FrameDecodeError:
                    continue

    @torch.no_grad()
    def preview(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Originals and reconstructions of a fixed set of frames, for TensorBoard and the report."""
        images = list(self._readable_frames(self.preview_rows, keep=True))  # read again every epoch
        if not images:
            return None
        originals = torch.stack(images).to(self.device)
        self.model.eval()
        with self._autocast():
            recon = self.model(originals).recon.float()
        self.model.train()
        return originals.cpu(), recon.clamp(0, 1).cpu()

    def _log_epoch(self, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        for split in ("train", "val"):
            for name, value in record[split].items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"epoch/{split}_{name}", value, epoch)
        self.writer.add_scalar("epoch/frames_per_second", record["frames_per_second"], epoch)
        self.writer.add_scalar("epoch/cache_hit_rate", record["cache_hit_rate"], epoch)
        self.writer.add_scalar("epoch/skipped_frames", record["skipped_total"], epoch)
        self.writer.add_scalar("epoch/learning_rate", self.optimizer.param_groups[0]["lr"], epoch)
        shown = self.preview() if self.writes else None
        if shown is not None:
            originals, recon = shown
            self.writer.add_image("reconstructions/originals_over_reconstructions", image_grid(originals, recon), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        for loader in (self.train_loader, self.val_loader):
            shutdown_workers(loader)


def _stall_advice(path: BucketReader, workers: int) -> str:
    if path.fits:
        return (f"raise --num-workers (now {workers}); the frames stay on local disk, so later epochs do not wait "
                "for the bucket")
    return (f"pack the frames (`pokevq pack`) so they are read shard by shard, raise --num-workers (now {workers}), "
            "or give the shard cache more room (--max-cache-bytes)")


def _open_frame_log() -> Any:
    path = settings.frame_log()  # an audit trail: `epoch step key` for every frame trained
    return open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed at the end of the epoch
