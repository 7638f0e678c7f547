"""The training loop: one epoch at a time, so the orchestrator can checkpoint between epochs.

The trainer composes its parts: the step (`step.py`), the validation (`evaluator.py`), the epoch's
figures and their one cross-rank merge (`epoch_stats.py`), where training stands (`state.py`), and
what rank 0 writes (`sink.py`). Read top to bottom: device and model → resume → data → one epoch
of steps → evaluation → the epoch's record, TensorBoard and a local checkpoint that the upload
step publishes.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pokevq import settings
from pokevq.config import TrainConfig
from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.data.streaming import shutdown_workers
from pokevq.dist import collectives
from pokevq.errors import NoFramesError
from pokevq.layout import epoch_file, step_file
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.train.checkpoint import Checkpoint
from pokevq.train.epoch_stats import EpochResult, EpochStats
from pokevq.train.evaluator import Evaluator
from pokevq.train.metrics import EpochMetrics
from pokevq.train.samples import SAMPLE_TRAIN_FRAMES, FrameSamples
from pokevq.train.sink import RankZeroSink
from pokevq.train.state import TrainState
from pokevq.train.step import TrainStep, select_device
from pokevq.train.stop import StopRequest

log = logging.getLogger(__name__)

STALL_WARNING = 0.20  # an epoch that waited longer than this share of its time for data says what to do
NO_TRAINING = {"loss": float("nan"), "psnr": float("nan"), "perplexity": 0.0, "codebook_usage": 0.0}


class Trainer:
    """One experiment's training: the model, its step, its data, its state and what it writes."""

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
        self.config, self.workdir = config, Path(workdir)
        self.stop = stop  # asked from outside the loop (SIGTERM, a lost lease): stop at the next step boundary
        self.started = time.monotonic()  # the time budget counts from here
        self.run_id = run_id  # written into mid-epoch checkpoints: a retry of this run continues from them
        self.on_step_checkpoint = on_step_checkpoint  # called with (path, sha256, global_step) after each one
        self.steps_run = 0  # steps trained by this process
        self.interrupted = False  # left mid-epoch: must be rebuilt from a checkpoint
        # In several processes (pokevq.dist), each rank trains on its share of every batch and rank 0 alone writes.
        self.rank_batch = collectives.rank_batch_size(config.optim.batch_size, collectives.world_size())
        self.device = select_device(config.distributed.device, collectives.local_rank())
        torch.manual_seed(config.optim.seed)
        random.seed(config.optim.seed)
        self.model_config = ModelConfig.for_run(config)
        self.model = VQVAE(self.model_config).to(self.device)
        self.step = TrainStep(self.model, config, self.device)

        # The baselines come from the seeding sample unless told otherwise (0: none, for a caller that scores its own).
        self.samples = FrameSamples(source, manifest, config.model.image_hw, config.optim.seed, sample_frames,
                                    baseline_frames)
        self.state = TrainState()
        if resume_state is not None:
            self._restore(resume_state, resume_name)
        elif init_from is not None:
            self.step.warm_start(init_from, resume_name)
        # Rank 0 decides (a follower has not received the resumed codebook yet) and seeds; the others receive it.
        collectives.on_first(lambda: self.model.needs_seeding and self.samples.seed_codebook(self.model))
        # Every rank starts from rank 0's weights, codebook, optimizer, position and random state.
        collectives.share_from_first(lambda: self._checkpoint(position=self.state.position),
                                     lambda state: self._restore(state, "rank 0"))
        self.step.distribute()
        resumed = resume_state is not None  # TensorBoard drops what a resumed run wrote after its checkpoint
        self.sink = RankZeroSink(self.workdir, purge_step=self.state.global_step + 1 if resumed else None)

        train_rows, val_rows = (manifest[manifest["split"] == split] for split in ("train", "val"))
        self.reader = reader or BucketReader.decide(manifest, source, max_bytes=config.storage.max_cache_bytes)
        common = dict(batch_size=self.rank_batch, seed=config.optim.seed, num_workers=config.data.num_workers,
                      pin_memory=self.device.type == "cuda", rank=collectives.rank(),
                      world_size=collectives.world_size())
        self.train_loader = self.reader.loader(train_rows, source, config.model.image_hw, shuffle=True, **common)
        self.val_loader = (self.reader.loader(val_rows, source, config.model.image_hw, shuffle=False, **common)
                           if len(val_rows) else None)
        self.evaluator = None if self.val_loader is None else Evaluator(
            self.model, self.val_loader, self.step.autocast, self.device,
            lambda: self.samples.fit_baselines(self.model, self.device), val_rows, config.model.image_hw, annotations,
            self.state.baselines)
        log.info("Model: VQ-VAE %s, %.2fM parameters, on %s%s%s", config.model.image_size,
                 sum(p.numel() for p in self.model.parameters()) / 1e6, self.device,
                 " (bf16 autocast)" if self.step.use_amp else " (fp32)", collectives.describe_step(self.rank_batch))

    # ------------------------------------------------------------ what others read
    epoch = property(lambda self: self.state.epoch)
    global_step = property(lambda self: self.state.global_step)
    history = property(lambda self: self.state.history)
    best = property(lambda self: self.state.best)
    skipped = property(lambda self: self.state.skipped)
    position = property(lambda self: self.state.position)
    optimizer = property(lambda self: self.step.optimizer)
    use_amp = property(lambda self: self.step.use_amp)
    tensorboard_dir = property(lambda self: self.sink.tensorboard_dir)
    start_epoch = property(lambda self: self.state.epoch + 1)

    # ---------------------------------------------------------------- resume
    def _restore(self, state: Checkpoint, name: str) -> None:
        self.step.load(state, name)
        self.state = TrainState.resumed(state, name)

    def _checkpoint(self, epoch: int | None = None, metrics: dict[str, Any] | None = None,
                    position: dict[str, Any] | None = None) -> Checkpoint:
        return self.state.checkpoint(self.model, self.step.optimizer, config=self.config.masked(),
                                     model_config=self.model_config.to_dict(), epoch=epoch, metrics=metrics,
                                     position=position, run_id=self.run_id)

    # ------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> EpochResult:
        """Train one epoch (or what is left of it), evaluate, log to TensorBoard and write a local checkpoint.

        With `checkpoint_every_steps`, a resumable checkpoint that records the loader's position is
        written every N steps; with `max_steps` or `time_budget`, or when `stop` is requested (SIGTERM),
        the epoch ends early at a step boundary with such a checkpoint, and the result says so (`partial`,
        `stopped_by`). A request that carries an error (a lost lease) raises it there and writes nothing.
        """
        if epoch != self.state.epoch + 1:
            raise RuntimeError(f"epoch {epoch} requested after epoch {self.state.epoch}")
        started = time.perf_counter()
        resumed = self.state.position_in(epoch)
        self.train_loader.set_epoch(epoch, resumed)
        tracker = self.train_loader.tracker(epoch)
        self.interrupted = True  # until the epoch ends: a trainer left mid-epoch must be rebuilt from a checkpoint
        stats, stopped_by = self._train_batches(epoch, tracker)
        if stopped_by is not None and self.stop is not None and self.stop.error is not None:
            raise self.stop.error  # a lost lease: no checkpoint, the experiment is another run's now
        stats = stats.merged(self.state)
        if stats.frames == 0 and stopped_by is None and resumed is None:
            raise NoFramesError(
                f"Epoch {epoch} had no readable training frames ({len(self.state.skipped)} skipped): "
                "check the frames under --frames-dir (see the skipped-frame warnings above)."
            )
        train = stats.metrics.compute() if stats.frames else dict(NO_TRAINING)
        val = self.evaluator(stats.counts, self.state) if self.evaluator is not None else {}
        seconds = time.perf_counter() - started
        record = self._record(epoch, stats, train, val, seconds, partial=stopped_by is not None)
        if stopped_by is not None:
            path, digest = self._step_checkpoint(epoch, tracker.position(), notify=False)
            is_best = False
        else:
            is_best = self.state.finish(epoch, val.get("loss", train["loss"]), record)
            path = self.workdir / "checkpoints" / epoch_file(epoch)
            digest = self.sink.save(path, lambda: self._checkpoint(metrics={"train": train, "val": val}))
        self.interrupted = False
        self.sink.epoch_figures(record, self.step.learning_rate)
        self.sink.preview(self.preview, epoch)
        self.sink.flush()
        self.sink.epoch_line(record, self.config.schedule.num_epochs, stopped_by, is_best)
        if stats.stall > STALL_WARNING and stats.frames:
            self.sink.warning("Epoch %d waited for data %.0f%% of its time (%s): %s", epoch, 100 * stats.stall,
                              self.reader.describe(), self.reader.stall_advice(self.config.data.num_workers))
        best = self.state.best
        return EpochResult(
            epoch=epoch, global_step=self.state.global_step, train=train, val=val, is_best=is_best,
            best_epoch=int(best["epoch"]) if best else 0, best_loss=float(best["loss"]) if best else float("nan"),
            checkpoint_path=str(path), checkpoint_sha256=digest, seconds=round(seconds, 3),
            frames_per_second=round(stats.frames_per_second, 2), cache_hits=stats.counts.hits,
            cache_misses=stats.counts.misses, skipped_new=stats.counts.skipped_new,
            data_wait_seconds=round(stats.wait, 3), data_stall=round(stats.stall, 4),
            data_path=self.reader.describe(), partial=stopped_by is not None, stopped_by=stopped_by,
        )

    def _train_batches(self, epoch: int, tracker: Any) -> tuple[EpochStats, str | None]:
        """This rank's steps over its share of the epoch, until it ends or something stops it (and why)."""
        from tqdm.auto import tqdm

        stats = EpochStats(EpochMetrics(self.model_config.codebook_size))
        steps = len(self.train_loader)
        log_every, every = max(1, steps // 10), self.config.schedule.checkpoint_every_steps
        frame_log = _open_frame_log()
        stopped_by: str | None = None
        # One iterator, handed to tqdm: tqdm.auto's iterator would start the DataLoader's epoch twice (its asyncio
        # flavour calls iter() up front, then iterates the loader again), throwing away the workers' first batches.
        progress = tqdm(iter(self.train_loader), total=steps, desc=f"epoch {epoch}/{self.config.schedule.num_epochs}",
                        unit="batch", disable=None)
        loop_started = step_started = waiting_since = time.perf_counter()
        for number, batch in enumerate(progress):
            stats.wait += time.perf_counter() - waiting_since
            stats.counts.account(batch, self.state)
            tracker.advance(batch)
            # Every rank steps together: a batch whose frames were all unreadable on one rank skips the step on all.
            if collectives.smallest(len(batch.keys), self.device) > 0:
                images = batch.pixels(self.device)
                out = self.step(images, self.state.global_step, steps)
                self.state.global_step += 1
                self.steps_run += 1
                stats.metrics.update(out.recon.detach().float(), images, out.codes, out.loss.detach(),
                                     images.shape[0])
                if frame_log is not None:
                    frame_log.write("".join(f"{epoch} {self.state.global_step} {key}\n" for key in batch.keys))
                    frame_log.flush()
                now = time.perf_counter()
                stats.seconds += now - step_started
                stats.frames += images.shape[0]
                step_started = now
                if self.state.global_step % log_every == 0 or self.state.global_step == 1:
                    progress.set_postfix(loss=f"{self._log_step(out, stats):.4f}")
                stopped_by = self._stop_reason()
                # One rank's clock or signal stops them all; only rank 0 hears a signal or loses the lease.
                if collectives.any_rank(stopped_by is not None, self.device):
                    stopped_by = stopped_by or "time_budget"
                    break
                if every and self.state.global_step % every == 0 and number + 1 < steps:
                    self._step_checkpoint(epoch, tracker.position())
                    step_started = time.perf_counter()
            waiting_since = time.perf_counter()
        stats.loop = time.perf_counter() - loop_started
        progress.close()
        if frame_log is not None:
            frame_log.close()
        return stats, stopped_by

    def _log_step(self, out: Any, stats: EpochStats) -> float:
        loss = float(out.loss.detach())
        self.sink.scalars("train", {
            "loss": loss, "recon_loss": float(out.recon_loss.detach()), "commit_loss": float(out.commit_loss.detach()),
            "batch_perplexity": float(out.perplexity), "learning_rate": self.step.learning_rate,
            "frames_per_second": stats.frames_per_second}, self.state.global_step)
        return loss

    def _stop_reason(self) -> str | None:
        """Why training stops after this step, if it does: a budget spent, or a request from outside the loop."""
        if self.config.schedule.max_steps and self.state.global_step >= self.config.schedule.max_steps:
            return "max_steps"
        budget = self.config.schedule.time_budget_seconds
        if budget is not None and time.monotonic() - self.started >= budget:
            return "time_budget"
        return self.stop.reason if self.stop is not None else None

    def _step_checkpoint(self, epoch: int, position: dict[str, Any], notify: bool = True) -> tuple[Path, str]:
        """A checkpoint inside `epoch`: the epochs before it are complete, `position` says how far this one got."""
        path = self.workdir / "checkpoints" / step_file(self.state.global_step)
        digest = self.sink.save(path, lambda: self._checkpoint(epoch=epoch - 1, position=position))
        self.sink.info("Mid-epoch checkpoint at step %d (epoch %d): %s", self.state.global_step, epoch, path.name)
        if notify and self.on_step_checkpoint is not None:
            self.on_step_checkpoint(path, digest, self.state.global_step)
        return path, digest

    # --------------------------------------------------- the epoch's record
    def _record(self, epoch: int, stats: EpochStats, train: dict[str, Any], val: dict[str, Any], seconds: float,
                partial: bool = False) -> dict[str, Any]:
        """The epoch as the history and the report keep it."""
        record: dict[str, Any] = {
            "epoch": epoch, "global_step": self.state.global_step, "train": train, "val": val,
            "seconds": round(seconds, 3), "frames_per_second": round(stats.frames_per_second, 2),
            "cache_hit_rate": round(stats.counts.hit_rate, 4), "skipped_total": len(self.state.skipped),
            "data_stall": round(stats.stall, 4), "data_path": self.reader.describe(),
        }
        evaluator = self.evaluator
        if evaluator is not None and evaluator.model_on_baseline_frames:
            record["val_on_baseline_frames"] = evaluator.model_on_baseline_frames
        if evaluator is not None and evaluator.baselines and not partial and self.state.baselines is None:
            record["baselines"] = evaluator.baselines  # the first complete epoch keeps them in the history
        if partial:
            record["partial"] = True
        return record

    def preview(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Originals and reconstructions of a fixed set of frames, for TensorBoard and the report."""
        return self.samples.preview(self.model, self.step.autocast, self.device)

    def close(self) -> None:
        self.sink.close()
        for loader in (self.train_loader, self.val_loader):
            shutdown_workers(loader)


def _open_frame_log() -> Any:
    path = settings.frame_log()  # an audit trail: `epoch step key` for every frame trained
    return open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed at the end of the epoch
