"""How long a run trains and when it writes checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from pokevq.config.options import fail, option, section, settle, whole
from pokevq.config.values import parse_duration


@section
@dataclass(frozen=True)
class ScheduleOptions:
    num_epochs: int = option(50, "Total number of training epochs.", flag="--epochs")
    checkpoint_every_steps: int = option(
        0, "Also write a resumable mid-epoch checkpoint every N training steps (0: epochs only).",
    )
    max_steps: int = option(0, "End training after this many steps in all, with a checkpoint (0: no limit).")
    time_budget: str | None = option(
        None,
        "End training at a step boundary once this run has trained this long, with a checkpoint: e.g. 90m, 6h or "
        "seconds.",
    )

    def __post_init__(self) -> None:
        if not whole(self.num_epochs, 0):
            fail("num_epochs", f"must be an integer >= 0; got {self.num_epochs!r}")
        for name in ("checkpoint_every_steps", "max_steps"):
            if not whole(getattr(self, name), 0):
                fail(name, f"must be an integer >= 0 (0: off); got {getattr(self, name)!r}")
        if self.time_budget is not None:
            settle(self, "time_budget", str(self.time_budget).strip() or None)
            if self.time_budget is not None:
                parse_duration(self.time_budget)

    @property
    def time_budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget) if self.time_budget else None
