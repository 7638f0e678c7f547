"""How the model is optimised: batch, learning rate and its schedule, precision, the seed."""

from __future__ import annotations

from dataclasses import dataclass

from pokevq.config.options import fail, option, section, whole

PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine")  # pokevq.train.schedule


@section
@dataclass(frozen=True)
class OptimOptions:
    batch_size: int = option(16, "Training batch size.")
    learning_rate: float = option(1e-4, "AdamW learning rate.")
    lr_schedule: str = option(
        "constant",
        "constant, or cosine: the learning rate falls along a half cosine to a tenth of it by the last epoch.",
    )
    warmup_steps: int = option(0, "Steps over which the learning rate rises linearly from 0 (0: none).")
    precision: str = option(
        "auto", "auto (bf16 autocast on CUDA, fp32 elsewhere), bf16 (autocast on any device) or fp32.",
    )
    seed: int = option(0, "Random seed for the split, init and shuffling.")

    def __post_init__(self) -> None:
        if not whole(self.batch_size, 1):
            fail("batch_size", f"must be a positive integer; got {self.batch_size!r}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) \
                or not self.learning_rate > 0:
            fail("learning_rate", f"must be > 0; got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            fail("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if not whole(self.warmup_steps, 0):
            fail("warmup_steps", f"must be an integer >= 0 (0: no warm-up); got {self.warmup_steps!r}")
        if self.precision not in PRECISIONS:
            fail("precision", f"must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            fail("seed", f"must be an integer; got {self.seed!r}")
