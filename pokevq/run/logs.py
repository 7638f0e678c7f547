"""Logging set-up: the console, and a local `training.log` that records every storage operation.

Per-operation records go to the non-propagating `pokevq.operations` logger, which only
`training.log` listens to; the library's other records reach the console and Prefect.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Loggers whose records belong in training.log: the library, and Prefect's run loggers.
FILE_LOGGERS = ("pokevq", "pokevq.operations", "prefect.flow_runs", "prefect.task_runs")
# Loggers that print request headers at DEBUG (botocore's `Authorization: … Credential=<key id>/…`,
# `X-Amz-Security-Token`, S3 error bodies with `<AWSAccessKeyId>`): their records are redacted.
REDACTED_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_CREDENTIAL = re.compile(r"(Credential=)([^/\s,'\"]+)")
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,124}\b")
_TOKEN_HEADER = re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)([^'\"\s,}]+)", re.IGNORECASE)
_KEY_ID_ELEMENT = re.compile(r"(<AWSAccessKeyId>)([^<]+)(</AWSAccessKeyId>)")
_redaction_lock = threading.Lock()
_redaction_installed = False


# `log.info(..., extra=CONSOLE)`: a line a person watching a normal run needs (one per epoch, where the
# report is). Everything else at INFO goes to training.log and the orchestrator's UI only.
CONSOLE = {"console": True}


class ConsoleFilter(logging.Filter):
    """The console of a normal run: lines marked CONSOLE, and the warnings and errors a user must act on.

    The orchestrator's chatter (task states, its server, its event queue draining at exit) stays in
    training.log and the UI; `--debug` shows everything.
    """

    CHATTER = ("Still processing items",)  # the orchestrator's event queue at exit, nothing to act on
    EVENTS = "prefect.events"  # its UI events: one it cannot send as a failing run shuts down is not the user's

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.EVENTS):
            return False
        if record.levelno >= logging.WARNING:
            return not str(record.msg).startswith(self.CHATTER)
        return bool(getattr(record, "console", False))


def _last_four(value: str) -> str:
    return f"…{value[-4:]}"


def redact(text: str) -> str:
    """`text` without access key ids (only their last four characters stay), secrets or session tokens."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, _last_four(value) if name == "AWS_ACCESS_KEY_ID" else "****")
    text = _CREDENTIAL.sub(lambda m: m.group(1) + _last_four(m.group(2)), text)
    text = _KEY_ID_ELEMENT.sub(lambda m: m.group(1) + _last_four(m.group(2)) + m.group(3), text)
    text = _TOKEN_HEADER.sub(lambda m: m.group(1) + "****", text)
    return _KEY_ID.sub(lambda m: _last_four(m.group(0)), text)


class RedactSecrets(logging.Filter):
    """Rewrites a record of the AWS client libraries so no credential reaches any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in REDACTED_LOGGERS:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
                return True
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


def install_redaction() -> None:
    """Redact every record of the AWS client libraries as it is created, whatever handler gets it.

    A filter on a logger misses its children's records and a filter on a handler misses handlers
    added later (Prefect's, pytest's), so the filter runs in the log record factory. Idempotent.
    """
    global _redaction_installed
    with _redaction_lock:
        if _redaction_installed:
            return
        previous = logging.getLogRecordFactory()
        redactor = RedactSecrets()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redactor.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _redaction_installed = True


class TrainingLogFile(logging.FileHandler):
    """training.log, which a full disk stops with one warning on the console instead of a traceback per record."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.failed = True  # before the warning below reaches this handler
        logging.getLogger(__name__).warning("Stopped writing %s: %s. Free disk space or pass another --output-dir.",
                                            self.baseFilename, error.strerror or error)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # what the full disk kept from the file is lost, as the warning said
            pass


def attach_training_log(path: str | Path, debug: bool = False) -> logging.Handler:
    """Start writing `training.log`; detach with `detach_training_log`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = TrainingLogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.DEBUG)
    install_redaction()
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
    """Debug mode (--debug): boto3 and botocore at DEBUG, with credentials redacted from their records."""
    install_redaction()
    for name in ("boto3", "botocore", "pokevq"):
        logging.getLogger(name).setLevel(logging.DEBUG)
