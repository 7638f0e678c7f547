"""What a run is: its name, where it resumes from, whether it is the nightly, how much it says."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pokevq.config.options import fail, option, section, settle
from pokevq.config.values import default_experiment_name, nightly_experiment_name


@section
@dataclass(frozen=True)
class RunOptions:
    experiment_name: str | None = option(None, "Name of this experiment (default: pokevq-YYYYMMDD-HHMMSS).")
    resume: str | None = option(None, "Checkpoint to resume from: s3://bucket/key or a local path.")
    nightly: bool = option(
        False,
        "A scheduled retraining run: experiment nightly-YYYYMMDD (the day's second: nightly-YYYYMMDD-2, ...), never "
        "falls back to local storage.",
    )
    warm_start: bool = option(
        True,
        "With --nightly, start from the previous nightly's checkpoint_best.pt (the same day's, if any) when one "
        "exists.",
    )
    tokenize_after: bool | None = option(
        None,
        "After training, tokenize the frames with the run's best checkpoint (the pokevq-tokenize flow); default: on "
        "with --nightly, off otherwise.",
        flag="--tokenize-after",
    )
    debug: bool = option(False, "Debug logging (botocore too) and tracebacks.")

    def __post_init__(self) -> None:
        if not self.experiment_name:
            settle(self, "experiment_name", nightly_experiment_name() if self.nightly else default_experiment_name())
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.experiment_name or ""):
            fail(
                "experiment_name",
                "must be 1-128 characters of letters, digits, '.', '_' or '-' "
                f"(it becomes an S3 prefix); got {self.experiment_name!r}",
            )

    @property
    def tokenizes_after(self) -> bool:
        return self.nightly if self.tokenize_after is None else bool(self.tokenize_after)
