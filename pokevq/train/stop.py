"""One way to end training early: at the next step boundary, whoever asks.

The trainer's own budgets (`--max-steps`, `--time-budget`) and every request from outside the
loop (SIGTERM, a lost lease, from a signal handler or the lease's heartbeat thread) end an epoch
through the same check after each step. A request that carries an `error` writes no checkpoint:
the trainer raises the error instead (a lost lease: another run owns the experiment's checkpoints).
"""

from __future__ import annotations

import threading

from pokevq.errors import PokevqError

SIGTERM = "sigterm"  # the reason a SIGTERM gives (a pod eviction, a spot reclaim)
LEASE_LOST = "lease_lost"


class StopRequest:
    """Set from any thread; read by the training loop after each step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.error: PokevqError | None = None

    def request(self, reason: str, error: PokevqError | None = None) -> None:
        """Ask the loop to stop; the first reason wins, except that one with an error wins over one without."""
        with self._lock:
            if error is not None and self.error is None:
                self.reason, self.error = reason, error
            elif self.reason is None:
                self.reason = reason

    @property
    def requested(self) -> bool:
        return self.reason is not None


def describe_stop(reason: str) -> str:
    """`The max_steps budget`, `SIGTERM`: what ended training, for the log and the report."""
    return "SIGTERM" if reason == SIGTERM else f"The {reason} budget"
