"""The process group as rank 0 (the flow's process) sees it: start it, tell the ranks what to train, stop it.

Rank 0 decides and broadcasts one small command per step of the flow; the other ranks
(`pokevq.dist.follower`) do the same with it:

- ``{"kind": "build"}``: build the trainer (rank 0's weights, optimizer and position follow);
- ``{"kind": "train", "epoch": N}``: train epoch N (all ranks in lockstep through DDP);
- ``{"kind": "stop"}``: leave.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from pokevq.config import TrainConfig
from pokevq.dist import collectives
from pokevq.dist.launch import LocalRanks, TrainingProcessError, WorldPlan, join_group

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 60  # for the ranks to leave once told to stop
FAILURE_WAIT_SECONDS = 10  # for a dead rank to be seen after a collective failed


class TrainingGroup:
    """Rank 0's handle on every training process of the run."""

    def __init__(self, plan: WorldPlan, local: LocalRanks | None) -> None:
        self.plan = plan
        self.local = local

    @classmethod
    def start(cls, config: TrainConfig, log_dir: Path) -> TrainingGroup | None:
        """This machine's other ranks started and every rank met; None when the run trains in one process.

        Their output goes to files under `log_dir` (and to the console too with --debug).
        """
        plan = WorldPlan.from_config(config)
        if plan.world_size == 1:
            return None
        local = (LocalRanks(plan, list(range(1, plan.nproc)), log_dir, show_output=config.run.debug)
                 if plan.nproc > 1 else None)
        group = cls(plan, local)
        started = time.monotonic()
        try:
            group._join()
        except BaseException:
            group.close(clean=False)
            raise
        log.info("Training in %d processes (%d per machine on %d machine(s), %s); they met at %s in %.1f s",
                 plan.world_size, plan.nproc, plan.nnodes, plan.backend, plan.endpoint, time.monotonic() - started)
        return group

    def _join(self) -> None:
        """Join as rank 0, failing at once when a local rank dies before every rank has met."""
        outcome: list[BaseException | None] = []

        def join() -> None:
            try:
                join_group(self.plan.backend, 0, self.plan.world_size, self.plan.endpoint)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append(exc)

        thread = threading.Thread(target=join, name="pokevq-join", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(timeout=0.2)
            if self.local is not None and self.local.failure is not None:
                raise TrainingProcessError(f"Training stopped: {self.local.failure}")
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def send(self, command: dict[str, Any]) -> None:
        """Broadcast `command` to every rank (they wait for it between epochs)."""
        with self.failures():
            collectives.from_first(command)

    def failures(self) -> _Failures:
        """`with group.failures():` turns a collective that failed because a rank died into that rank's story."""
        return _Failures(self)

    def explain(self, exc: BaseException) -> TrainingProcessError | None:
        failure = self.local.wait_for_failure(FAILURE_WAIT_SECONDS) if self.local is not None else None
        if failure is not None:
            return TrainingProcessError(f"Training stopped: {failure}. Retry the flow run to continue from the last "
                                        "checkpoint")
        if _is_distributed_error(exc):
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            return TrainingProcessError(f"Training stopped: another training process failed ({first}); check the "
                                        "other machines' logs, then retry the flow run to continue from the last "
                                        "checkpoint")
        return None

    def close(self, clean: bool = True) -> None:
        """Tell the ranks to stop (when they can still hear it), wait for them, and leave none behind."""
        try:
            if clean and dist.is_initialized() and (self.local is None or self.local.failure is None):
                collectives.from_first({"kind": "stop"})
                if self.local is not None:
                    self.local.join(STOP_WAIT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a rank that cannot hear it is stopped below
            log.debug("Could not tell the training processes to stop: %s", exc)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            if self.local is not None:
                self.local.close()


class _Failures:
    def __init__(self, group: TrainingGroup) -> None:
        self.group = group

    def __enter__(self) -> _Failures:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, TrainingProcessError):
            return
        explained = self.group.explain(exc)
        if explained is not None:
            raise explained from exc


def _is_distributed_error(exc: BaseException) -> bool:
    kinds = tuple(k for k in (getattr(dist, "DistError", None), getattr(dist, "DistBackendError", None)) if k)
    text = str(exc)
    return isinstance(exc, kinds) or (isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("Connection closed by peer", "Connection reset", "gloo", "NCCL", "Broken pipe")))
