"""Where training stands, besides the weights: what a checkpoint records and the report reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from pokevq.train.checkpoint import Checkpoint, build_checkpoint, restore_rng

log = logging.getLogger(__name__)

MAX_SKIPPED_KEPT = 10_000  # skipped-frame reasons carried in checkpoints, so a resumed report still lists them


@dataclass
class TrainState:
    """The epochs done, the steps taken, the best epoch, the frames skipped and where an epoch stopped."""

    epoch: int = 0  # the last complete epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per complete epoch
    best: dict[str, Any] | None = None  # {"epoch", "loss"}: the epoch a user would keep
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why it was skipped, over the experiment
    position: dict[str, Any] | None = None  # how far the next epoch got, when it stopped mid-way

    @classmethod
    def resumed(cls, checkpoint: Checkpoint, name: str) -> TrainState:
        """The state a checkpoint saved, with its random state restored; an old data path's position is dropped."""
        position = checkpoint.position or None
        if position and position.get("kind", "cached") != "streaming":
            log.warning("Checkpoint %s stopped mid-epoch on the data path of an earlier pokevq, whose position this "
                        "one cannot follow: epoch %d starts again from its first batch (the weights are kept)",
                        name, checkpoint.epoch + 1)
            position = None
        if checkpoint.rng:
            restore_rng(checkpoint.rng)
        if position:
            log.info("Resumed from %s: in epoch %d after global step %d", name, checkpoint.epoch + 1,
                     checkpoint.global_step)
        else:
            log.info("Resumed from %s: epoch %d, global step %d", name, checkpoint.epoch, checkpoint.global_step)
        return cls(epoch=checkpoint.epoch, global_step=checkpoint.global_step, history=list(checkpoint.history),
                   best=checkpoint.best, skipped=dict(checkpoint.skipped), position=position)

    @property
    def baselines(self) -> dict[str, Any] | None:
        """The tile dictionaries' figures, measured once per experiment and kept in the first complete epoch."""
        return next((r["baselines"] for r in reversed(self.history) if r.get("baselines")), None)

    def position_in(self, epoch: int) -> dict[str, Any] | None:
        """Where `epoch` continues from, when it is the one that stopped mid-way."""
        return self.position if self.position and int(self.position.get("epoch", -1)) == epoch else None

    def skip(self, key: str, reason: str) -> bool:
        """Record a frame left out; True the first time the experiment sees it."""
        if key in self.skipped:
            return False
        self.skipped[key] = reason
        return True

    def finish(self, epoch: int, loss: float, record: dict[str, Any]) -> bool:
        """A complete epoch: kept in the history; True when it is the best so far (lowest `loss`)."""
        self.epoch, self.position = epoch, None
        is_best = self.best is None or loss < self.best["loss"]
        if is_best:
            self.best = {"epoch": epoch, "loss": loss}
        self.history.append(record)
        return is_best

    def checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, config: dict[str, Any],
                   model_config: dict[str, Any], epoch: int | None = None, metrics: dict[str, Any] | None = None,
                   position: dict[str, Any] | None = None, run_id: str = "") -> Checkpoint:
        """This state with the weights: after `epoch` complete epochs (default: this state's), and `position`."""
        return build_checkpoint(
            model, optimizer, epoch=self.epoch if epoch is None else epoch, global_step=self.global_step,
            config=config, model_config=model_config, metrics=metrics or {}, history=self.history, best=self.best,
            position=position, run_id=run_id if position is not None else "",
            skipped=dict(list(self.skipped.items())[:MAX_SKIPPED_KEPT]),
        )
