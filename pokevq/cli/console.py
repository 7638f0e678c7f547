"""What a normal run shows on the console: its own lines and what a user must act on, not the orchestrator's.

Prefect's console handler sits on the root logger; a filter on it keeps lines marked
`pokevq.run.logs.CONSOLE` (one per epoch, the start, where the report is) and warnings and
errors. Task-state lines and the temporary server's notices still reach training.log and
the Prefect UI; `--debug` shows everything.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pokevq.errors import PokevqError
from pokevq.run.logs import ConsoleFilter, enable_debug


def _hide_user_error_tracebacks() -> None:
    """Prefect logs task failures with a traceback; for a user error the message says it all.

    A record factory works whenever Prefect configures its handlers (it does so lazily).
    """
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], PokevqError):
            record.exc_info = None
            record.exc_text = None
        return record

    logging.setLogRecordFactory(factory)


def prepare_prefect_logging(debug: bool) -> None:
    """Route the library's logs through Prefect (console and UI) before Prefect configures logging."""
    extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
    if "pokevq" not in extra.split(","):
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [extra, "pokevq"]))
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # library logs outside a run
    # The temporary server's usage reports are not this run's business (and compete for its SQLite file).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if debug:
        enable_debug()
        return
    _hide_user_error_tracebacks()
    quiet_console()


def quiet_console() -> None:
    """Filter Prefect's console handler; its later logging set-ups are incremental and keep the filter."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, ConsoleFilter) for f in handler.filters
        ):
            handler.addFilter(ConsoleFilter())
