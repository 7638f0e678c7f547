"""Logging set-up: the console, and a local `training.log` that records every storage operation.

Per-operation records go to the non-propagating `pokevq.operations` logger, which only
`training.log` listens to; the library's other records reach the console and Prefect.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Loggers whose records belong in training.log: the library, and Prefect's run loggers.
FILE_LOGGERS = ("pokevq", "pokevq.operations", "prefect.flow_runs", "prefect.task_runs")


def attach_training_log(path: str | Path, debug: bool = False) -> logging.Handler:
    """Start writing `training.log`; detach with `detach_training_log`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.DEBUG)
    library = logging.getLogger("pokevq")
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)  # the orchestrator's root level would otherwise hide progress
    for name in FILE_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    if debug:
        enable_debug()
    return handler


def detach_training_log(handler: logging.Handler) -> None:
    for name in FILE_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def enable_debug() -> None:
    """The guide's debug mode: boto3 and botocore at DEBUG."""
    for name in ("boto3", "botocore", "pokevq"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def configure_console(debug: bool = False) -> None:
    """Console logging for the library when it runs outside Prefect (Prefect configures its own)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=LOG_FORMAT)
    if debug:
        enable_debug()
