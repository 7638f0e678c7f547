"""The learning rate at each step: a linear warm-up, then constant or a half cosine.

A pure function of the global step, so a resumed run (mid-epoch too) continues on the same curve
from the step its checkpoint recorded, with no scheduler state to save.
"""

from __future__ import annotations

import math

FLOOR = 0.1  # the cosine ends at this share of the peak: the last epochs still learn


def learning_rate_at(step: int, *, peak: float, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps` in the whole run."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return peak * warm
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return peak * warm * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))
