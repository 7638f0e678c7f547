"""What every task shares: the run's session, and which failures are worth a retry."""

from __future__ import annotations

import threading
from typing import Any

from prefect.runtime import flow_run

from pokevq.config import TrainConfig
from pokevq.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    PokevqError,
    StorageError,
)
from pokevq.session import RunSession
from pokevq.validate import StoragePlan

_sessions: dict[str, RunSession] = {}
_lock = threading.Lock()

# Retry policy of I/O tasks: exponential backoff with jitter, on transient failures only.
IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 4, 8]
IO_RETRY_JITTER = 0.5
_PERMANENT = (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
)


def per_flow_run(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a step: the flow run, the task and its epoch.

    Retrying a failed flow run finds the results of the steps that already succeeded and
    shows them as Cached; a new run of the deployment has a new id, so it trains afresh.
    """
    epoch = parameters.get("epoch", "")
    return f"pokevq-{context.task_run.flow_run_id}-{context.task.name}-{epoch}"


def run_key() -> str:
    """Sessions are per flow run, so concurrent runs in one process never share state."""
    return str(flow_run.id or "local")


def session(config: dict[str, Any], plan: dict[str, Any]) -> RunSession:
    key = run_key()
    with _lock:
        if key not in _sessions:
            _sessions[key] = RunSession(TrainConfig.from_dict(config), StoragePlan.from_dict(plan))
        return _sessions[key]


def close_session() -> None:
    with _lock:
        found = _sessions.pop(run_key(), None)
    if found is not None:
        found.close()


def is_transient(exc: BaseException) -> bool:
    """Network trouble and server errors are worth a retry; wrong keys, denials and bad input are not."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, StorageError):
        return True
    if isinstance(exc, PokevqError):
        return False
    return isinstance(exc, (OSError, TimeoutError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry only what can succeed on a second try."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classifying, not handling
        return is_transient(exc)
    return False
