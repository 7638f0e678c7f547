"""What a run writes besides checkpoints' contents: TensorBoard, the epoch's console line, previews, files.

Rank 0 alone writes (`writes`); every other rank gets the same calls and writes nothing, so the
training loop never asks which rank it is.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pokevq.dist import collectives
from pokevq.errors import OutputDirError
from pokevq.run.logs import CONSOLE
from pokevq.train.checkpoint import Checkpoint
from pokevq.train.preview import image_grid

log = logging.getLogger(__name__)


class RankZeroSink:
    """TensorBoard scalars and images, log lines and checkpoint files, from rank 0 only."""

    def __init__(self, workdir: Path, writes: bool | None = None, purge_step: int | None = None) -> None:
        """`writes`: whether this process writes (default: it is rank 0)."""
        self.writes = collectives.rank() == 0 if writes is None else writes
        self.tensorboard_dir = workdir / "tensorboard"
        self.writer: Any = _NoWriter()
        if self.writes:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = _TensorBoardFiles(SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=purge_step),
                                            self.tensorboard_dir)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        """`prefix/name` for each of `values`."""
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def epoch_figures(self, record: dict[str, Any], learning_rate: float) -> None:
        """An epoch's record (`Trainer._record`) in TensorBoard: its metrics, speed, and the baselines' (once)."""
        epoch = record["epoch"]
        for split in ("train", "val"):
            self.scalars("epoch", {f"{split}_{name}": value for name, value in record[split].items()
                                   if isinstance(value, (int, float)) and math.isfinite(value)}, epoch)
        self.scalars("epoch", {"frames_per_second": record["frames_per_second"],
                               "data_stall_fraction": record["data_stall"], "cache_hit_rate": record["cache_hit_rate"],
                               "skipped_frames": record["skipped_total"], "learning_rate": learning_rate}, epoch)
        for name, figures in (record.get("baselines") or {}).items():
            self.scalars("baselines", {f"{name.replace(' ', '_')}_{metric}": figures[metric] for metric in
                                       ("psnr", "pixel_accuracy", "dialog_accuracy") if metric in figures}, epoch)

    def epoch_line(self, record: dict[str, Any], of: int, stopped_by: str | None, is_best: bool) -> None:
        """The one console line a person watching the run reads per epoch."""
        train, val = record["train"], record["val"]
        quality = " ".join(f"{label} {100 * val[name]:.2f}%" for name, label in (
            ("pixel_accuracy", "pixel accuracy"), ("dialog_accuracy", "dialog"), ("token_stability", "stability"))
            if name in val)
        self.info(
            "Epoch %d/%d%s: train loss %.5f psnr %.2f dB | val loss %s psnr %s%s | perplexity %.1f usage %.0f%% | "
            "%.1f frames/s | data stall %.0f%% | cache hit rate %.0f%%%s", record["epoch"], of,
            f" (stopped at step {record['global_step']}: {stopped_by})" if stopped_by else "", train["loss"],
            train["psnr"], f"{val['loss']:.5f}" if val else "n/a", f"{val['psnr']:.2f} dB" if val else "n/a",
            f" {quality}" if quality else "", (val or train)["perplexity"], 100 * (val or train)["codebook_usage"],
            record["frames_per_second"], 100 * record["data_stall"], 100 * record["cache_hit_rate"],
            " (new best)" if is_best else "", console=True)

    def preview(self, make: Callable[[], tuple[torch.Tensor, torch.Tensor] | None], epoch: int) -> None:
        """Originals over their reconstructions (`make` runs on rank 0 alone: it reads frames)."""
        shown = make() if self.writes else None
        if shown is not None:
            self.writer.add_image("reconstructions/originals_over_reconstructions", image_grid(*shown), epoch)

    def flush(self) -> None:
        self.writer.flush()

    def save(self, path: Path, make: Callable[[], Checkpoint]) -> str:
        """Write the checkpoint `make` builds and return its SHA-256; "" on the other ranks."""
        return make().save(path) if self.writes else ""

    def info(self, message: str, *args: Any, console: bool = False) -> None:
        """A line of rank 0's log (`console`: shown on a normal run's console); debug on the others."""
        log.log(logging.INFO if self.writes else logging.DEBUG, message, *args, extra=CONSOLE if console else None)

    def warning(self, message: str, *args: Any) -> None:
        if self.writes:
            log.warning(message, *args)

    def close(self) -> None:
        self.writer.close()


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
