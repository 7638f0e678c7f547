"""An epoch's figures: counted on each rank as batches arrive, merged over every rank in one reduce, and its result."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pokevq.data.batch import Batch
from pokevq.dist import collectives
from pokevq.train.metrics import EpochMetrics
from pokevq.train.state import TrainState

log = logging.getLogger(__name__)


@dataclass
class FrameCounts:
    """Cache hits and misses of a pass over a split, and the frames it skipped for the first time."""

    hits: int = 0
    misses: int = 0
    skipped_new: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    def account(self, batch: Batch, state: TrainState) -> None:
        self.hits += batch.hits
        self.misses += batch.misses
        for key, reason in batch.skipped:
            if state.skip(key, reason):
                self.skipped_new.append((key, reason))
                log.warning("Skipped frame %s: %s", key, reason)

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def join(self, parts: list[FrameCounts], state: TrainState) -> None:
        """Every rank's counts (`parts` in rank order) added to these.

        This rank's own skipped frames are already in `state` (`account`); another rank's count as
        new only when no rank skipped them before.
        """
        mine = collectives.rank()
        for index, part in enumerate(parts):
            self.hits += part.hits
            self.misses += part.misses
            for key, reason in part.skipped_new:
                if index == mine or key not in state.skipped:
                    state.skipped.setdefault(key, reason)
                    self.skipped_new.append((key, reason))


@dataclass
class EpochStats:
    """One epoch's training on this rank: metrics, frame counts, and where the time went."""

    metrics: EpochMetrics
    counts: FrameCounts = field(default_factory=FrameCounts)
    frames: int = 0  # frames trained
    seconds: float = 0.0  # time in training steps
    wait: float = 0.0  # time the loop waited for its next batch: the input pipeline's stall
    loop: float = 0.0  # the whole loop

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    @property
    def stall(self) -> float:
        return self.wait / max(self.loop, 1e-9)

    def merged(self, state: TrainState) -> EpochStats:
        """The epoch over every rank: metrics and counts summed, the time of the slowest rank."""
        mine: dict[str, Any] = {"metrics": self.metrics.state(), "counts": self.counts, "frames": self.frames,
                                "seconds": self.seconds, "wait": self.wait, "loop": self.loop}
        everyone = collectives.gather_objects(mine)
        metrics = EpochMetrics(self.metrics.codebook_size)
        for part in everyone:
            metrics.merge(part["metrics"])
        counts = FrameCounts()
        counts.join([part["counts"] for part in everyone], state)
        slowest = max(everyone, key=lambda part: part["loop"])
        return EpochStats(metrics, counts, frames=sum(p["frames"] for p in everyone),
                          seconds=max(p["seconds"] for p in everyone), wait=slowest["wait"], loop=slowest["loop"])


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
