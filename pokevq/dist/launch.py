"""Start this machine's training processes with torchrun's own launcher, and watch them.

Rank 0 is the process that runs the flow: it keeps the Prefect task structure, writes every
output and tells the other ranks what to train (`pokevq.dist.follower`). The other local
ranks are started here by `torch.distributed.elastic.multiprocessing` (what torchrun uses),
with torchrun's environment contract (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...).
On other machines, `pokevq train --node-rank N ...` starts that machine's ranks the same way.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pokevq import settings
from pokevq.config import TrainConfig
from pokevq.dist.collectives import rank_batch_size
from pokevq.errors import ConfigError, PokevqError
from pokevq.storage.local_server import free_port

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class TrainingProcessError(PokevqError):
    """A training process died or failed: the step fails with which rank and why."""


@dataclass(frozen=True)
class WorldPlan:
    """How many processes train, where they meet, and which of them this machine runs."""

    nproc: int
    nnodes: int
    node_rank: int
    endpoint: str
    backend: str

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def first_rank(self) -> int:
        return self.node_rank * self.nproc

    @classmethod
    def from_config(cls, config: TrainConfig) -> WorldPlan:
        cuda = config.distributed.device in ("auto", "cuda") and torch.cuda.is_available()
        nproc = config.distributed.nproc_per_node
        if nproc == "auto":
            nproc = torch.cuda.device_count() if cuda else 1
        nproc = int(nproc)
        if cuda and nproc > torch.cuda.device_count():
            raise ConfigError(f"nproc_per_node (--nproc-per-node) {nproc} is more than the {torch.cuda.device_count()}"
                              " GPU(s) of this machine; use --nproc-per-node auto")
        world = nproc * config.distributed.nnodes
        rank_batch_size(config.optim.batch_size, world)  # refused here, before any process starts
        endpoint = config.distributed.rdzv_endpoint or (f"127.0.0.1:{free_port()}" if world > 1 else "")
        return cls(nproc, config.distributed.nnodes, config.distributed.node_rank, endpoint, "nccl" if cuda else "gloo")

    def rank_environment(self, local_rank: int) -> dict[str, str]:
        """torchrun's environment contract for one process of this machine."""
        host, _, port = self.endpoint.rpartition(":")
        return {
            "RANK": str(self.first_rank + local_rank), "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size), "LOCAL_WORLD_SIZE": str(self.nproc),
            "GROUP_RANK": str(self.node_rank), "MASTER_ADDR": host.strip("[]"), "MASTER_PORT": port,
            settings.DIST_BACKEND: self.backend, "OMP_NUM_THREADS": settings.omp_threads(),
        }


def join_group(backend: str, rank: int, world_size: int, endpoint: str | None = None) -> None:
    """Join the process group (rank 0 hosts its store at the endpoint); waits for every rank, up to the timeout."""
    timeout = timedelta(seconds=settings.dist_timeout())
    init = f"tcp://{endpoint}" if endpoint else "env://"
    try:
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=world_size, timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingProcessError(
            f"Training processes could not meet at {endpoint or settings.master_address()} within "
            f"{timeout.total_seconds():.0f} s ({first}): check --rdzv-endpoint and that every --node-rank started (or "
            "raise POKEVQ_DIST_TIMEOUT)"
        ) from exc


class LocalRanks:
    """The training processes this machine starts besides the one running the flow, watched while they run."""

    def __init__(self, plan: WorldPlan, local_ranks: list[int], log_dir: Path | None = None,
                 show_output: bool = False) -> None:
        """`log_dir` keeps each rank's output (`rank<N>/stdout.log`, `stderr.log`); `show_output` echoes it too."""
        from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std, start_processes

        self.plan = plan
        self.local_ranks = local_ranks
        self.failure: str | None = None
        self.finished = False
        # torch's launcher logs a failure itself; the failure is told once, by the run, in one line.
        logging.getLogger("torch.distributed.elastic").setLevel(logging.DEBUG if show_output else logging.CRITICAL)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="pokevq-ranks-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args = {i: ("-m", "pokevq.dist.follower") for i in range(len(local_ranks))}
        envs = {i: plan.rank_environment(local) for i, local in enumerate(local_ranks)}
        specs = DefaultLogsSpecs(log_dir=str(self.log_dir), redirects=Std.ALL, tee=Std.ALL if show_output else Std.NONE)
        self.context = start_processes(name="pokevq-rank", entrypoint=sys.executable, args=args, envs=envs,
                                       logs_specs=specs)
        self._watcher = threading.Thread(target=self._watch, name="pokevq-rank-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self.finished:
            result = self.context.wait(timeout=0)
            if result is not None:
                if result.is_failed():
                    self.failure = self._describe(result.failures)
                    log.debug("Training process failed: %s", self.failure)
                return
            time.sleep(POLL_SECONDS)

    def _describe(self, failures: dict[int, Any]) -> str:
        # A rank stopped by SIGTERM is usually one the launcher stopped because a peer failed: name the peer.
        first = min(failures.values(), key=lambda failure: (failure.exitcode == -signal.SIGTERM, failure.timestamp))
        local = self.local_ranks[first.local_rank]
        rank = self.plan.first_rank + local
        if first.exitcode < 0:
            name = _signal_name(-first.exitcode)
            cause = f"killed by {name}" + (" (out of memory? see the kernel log)" if name == "SIGKILL" else "")
        else:
            cause = _error_of(first) or f"exited with code {first.exitcode}"
        logs = next(self.log_dir.rglob(f"attempt_0/{first.local_rank}/stderr.log"), None)
        where = f"; its output: {logs}" if logs is not None else ""
        return f"training rank {rank} (local rank {local}, pid {first.pid}) {cause}{where}"

    def wait_for_failure(self, seconds: float) -> str | None:
        """The first failure, waiting up to `seconds` for the watcher to see one (a peer's error may come first)."""
        deadline = time.monotonic() + seconds
        while self.failure is None and self._watcher.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.failure

    def join(self, seconds: float) -> bool:
        """Wait for the ranks to exit after they were told to stop; True when they all exited cleanly."""
        deadline = time.monotonic() + seconds
        while self._watcher.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._watcher.is_alive() and self.failure is None

    def close(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL): none is left behind."""
        self.finished = True
        self.context.close()
        self._watcher.join(timeout=5)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _error_of(failure: Any) -> str | None:
    """The exception a rank recorded (torch.distributed.elastic's error file), as one line."""
    try:
        message = failure.message
    except Exception:  # noqa: BLE001 - no error file: the exit code says what is known
        return None
    if isinstance(message, dict):
        message = message.get("message", "")
    text = str(message or "").strip()
    if not text or text.startswith("To enable traceback"):
        return None
    return "failed: " + text.splitlines()[0][:300]


def run_node(config: TrainConfig) -> None:
    """A machine other than 0 (`--node-rank N`): start its ranks, which train as rank 0 says, and wait for them."""
    plan = WorldPlan.from_config(config)
    if config.storage.local_cache_dir:
        settings.set_node_cache_dir(str(config.storage.local_cache_dir))  # this machine's cache, for its ranks
    ranks = LocalRanks(plan, list(range(plan.nproc)), show_output=True)
    log.info("Machine %d of %d: %d training process(es) (ranks %d-%d) meeting at %s", plan.node_rank, plan.nnodes,
             plan.nproc, plan.first_rank, plan.first_rank + plan.nproc - 1, plan.endpoint)
    try:
        while ranks.failure is None and not ranks.join(1.0):
            pass
    finally:
        ranks.close()
    if ranks.failure is not None:
        raise TrainingProcessError(f"Training stopped: {ranks.failure}")
