"""Nightly experiment names: `nightly-YYYYMMDD`, then `nightly-YYYYMMDD-2`, `-3`, ... on the same day.

A second nightly of a day never writes into the first one's experiment: it takes the day's next
free number, and (through `nightly_order`) warm-starts from the newest earlier nightly, which is
the day's last one when there is one. This module works on any `Storage` and never imports the
orchestrator.
"""

from __future__ import annotations

import re

from pokevq.layout import Layout
from pokevq.storage import Storage

_NIGHTLY = re.compile(r"nightly-(\d{8})(?:-([1-9]\d{0,5}))?")


def nightly_order(name: str) -> tuple[str, int] | None:
    """(date, number) of a dated nightly name (the day's first is number 1), else None."""
    match = _NIGHTLY.fullmatch(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2) or 1)


def is_first_of_day(name: str) -> bool:
    """`nightly-YYYYMMDD` itself: the name a nightly gets before its number is known."""
    order = nightly_order(name)
    return order is not None and order[1] == 1 and not name.endswith("-1")


def taken_experiments(storage: Storage, layout: Layout, stem: str) -> set[str]:
    """Experiment names starting with `stem` that already have any output (a lease, checkpoint, log, report...)."""
    names: set[str] = set()
    for root in (layout.checkpoint_prefix, layout.manifests_prefix, layout.reports_prefix, layout.logs_prefix,
                 layout.tensorboard_prefix):
        for info in storage.list(f"{root}/{stem}"):
            names.add(info.key[len(root) + 1:].split("/", 1)[0])
    return names


def next_nightly_name(storage: Storage, layout: Layout) -> str:
    """`layout.experiment` (`nightly-YYYYMMDD`) when the day has no nightly yet, else the day's next number."""
    base = layout.experiment
    numbers = [order[1] for name in taken_experiments(storage, layout, base)
               if (order := nightly_order(name)) is not None and order[0] == nightly_order(base)[0]]
    return base if not numbers else f"{base}-{max(numbers) + 1}"
