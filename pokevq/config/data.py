"""How frames are fed to the model: the validation split and the reading workers."""

from __future__ import annotations

from dataclasses import dataclass

from pokevq.config.options import fail, option, section, whole

DATA_PATHS = ("auto", "cached", "streaming")


@section
@dataclass(frozen=True)
class DataOptions:
    num_workers: int = option(2, "DataLoader worker processes.")
    val_fraction: float = option(0.1, "Share of episodes held out for validation.")
    data_path: str = option(
        "auto",
        "Deprecated and ignored: every run reads its frames one way (auto, cached or streaming are accepted, with "
        "a warning for the last two, so existing commands and deployments keep working).",
    )

    def __post_init__(self) -> None:
        if not whole(self.num_workers, 0):
            fail("num_workers", f"must be an integer >= 0; got {self.num_workers!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            fail("val_fraction", f"must be in [0, 1); got {self.val_fraction!r}")
        if self.data_path not in DATA_PATHS:
            fail("data_path", f"must be one of {', '.join(DATA_PATHS)}; got {self.data_path!r}")
