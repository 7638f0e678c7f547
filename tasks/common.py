"""What every task shares: which failures are worth a retry, and the cache key of a step."""

from __future__ import annotations

from typing import Any

from prefect.runtime import flow_run

from pokevq import settings
from pokevq.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConnectError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    PokevqError,
    PreconditionFailedError,
    StorageError,
)


def retry_delays() -> list[float]:
    """The I/O tasks' retry delays as `$POKEVQ_TASK_RETRY_DELAYS` says now (default 2, 4, 8 seconds)."""
    return settings.task_retry_delays()


IO_RETRY_DELAYS = retry_delays()
IO_RETRIES = len(IO_RETRY_DELAYS)
IO_RETRY_JITTER = 0.5


def retry_options() -> dict[str, Any]:
    """`Task.with_options` arguments for the retry policy as the environment says now."""
    delays = retry_delays()
    return dict(retries=len(delays), retry_delay_seconds=delays or 0)


_PERMANENT = (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    PreconditionFailedError,  # another writer won: retrying the same write cannot succeed
)


def per_flow_run(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a step: the flow run, the task and its epoch.

    Retrying a failed flow run finds the results of the steps that already succeeded and
    shows them as Cached; a new run of the deployment has a new id, so it trains afresh.
    """
    epoch = parameters.get("epoch", "")
    return f"pokevq-{context.task_run.flow_run_id}-{context.task.name}-{epoch}"


def run_id() -> str:
    """The flow run this process serves ("local" outside one): a retry of it continues its own checkpoints."""
    return str(flow_run.id or "local")


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


def retry_unless_unreachable(task: Any, task_run: Any, state: Any) -> bool:
    """For validation: retry throttling and server errors, but answer at once when S3 cannot be reached."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classifying, not handling
        return is_transient(exc) and not isinstance(exc, ConnectError)
    return False


# What every I/O task shares: transient failures retried with backoff and jitter ...
IO_RETRY: dict[str, Any] = dict(
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_jitter_factor=IO_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
# ... and, unless it must run every time, a result cached per flow run so a retry skips it.
IO_TASK: dict[str, Any] = dict(IO_RETRY, cache_key_fn=per_flow_run)
