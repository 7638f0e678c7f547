"""Parsers of option values given as text, and the names runs get when none is given."""

from __future__ import annotations

import re
from datetime import datetime

from pokevq.config.options import flag_for
from pokevq.errors import ConfigError

DEFAULT_IMAGE_SIZE = "144x160"


def parse_image_size(value: str) -> tuple[int, int]:
    """Parse `HxW` (e.g. `144x160`) into (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
    if not match:
        raise ConfigError(
            f"image_size ({flag_for('image_size')}) must look like HxW, e.g. 144x160; got {value!r}"
        )
    height, width = int(match.group(1)), int(match.group(2))
    if height < 8 or width < 8:
        raise ConfigError(f"image_size ({flag_for('image_size')}) must be at least 8x8; got {value!r}")
    return height, width


def parse_duration(value: str | float) -> float:
    """`90`, `90s`, `30m`, `6h` or `1d` -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)] if match else 0
    if not seconds > 0:
        raise ConfigError(
            f"time_budget ({flag_for('time_budget')}) must be a duration like 90m, 6h or a number of seconds; "
            f"got {value!r}"
        )
    return seconds


def default_experiment_name(now: datetime | None = None) -> str:
    """Auto-generated experiment names sort by time: `pokevq-20261126-031500`."""
    return (now or datetime.now()).strftime("pokevq-%Y%m%d-%H%M%S")


def nightly_experiment_name(day: datetime | None = None) -> str:
    """Scheduled runs are named after their date: `nightly-20261126`."""
    return (day or datetime.now()).strftime("nightly-%Y%m%d")
