"""Upload tasks, run next to training: checkpoints, TensorBoard event files, the training log."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pokevq.run.session import RunSession
from pokevq.train.publish import is_published, publish_checkpoint, upload_log
from tasks.common import IO_RETRY, IO_TASK


@task(name="upload_checkpoint", task_run_name="upload_checkpoint[{epoch}]", **IO_TASK)
def upload_checkpoint(run: RunSession, epoch: int, result: dict[str, Any]) -> dict[str, str]:
    """Publish the epoch's checkpoint; `latest` and `best` move only once it is verified in storage.

    An epoch that a budget ended early publishes its step checkpoint (`checkpoint_step_S.pt`) instead.
    """
    return publish_checkpoint(
        run.storage, run.layout, result["checkpoint_path"], epoch, result["checkpoint_sha256"], result["is_best"],
        global_step=result.get("global_step"), mid_epoch=bool(result.get("partial")), guard=run.check_lease,
    )


@task(name="upload_tensorboard", task_run_name="upload_tensorboard[{epoch}]", **IO_TASK)
def upload_tensorboard(run: RunSession, epoch: int, result: dict[str, Any]) -> dict[str, Any]:
    """Upload the event files the epoch wrote: only those new or changed since the last upload."""
    uploaded = run.tensorboard.sync()
    return {"uploaded": len(uploaded), "uri": run.storage.uri(run.layout.tensorboard)}


@task(name="upload_logs", task_run_name="upload_logs[{epoch}]", **IO_TASK)
def upload_logs(run: RunSession, epoch: int | str, result: dict[str, Any] | None = None) -> str | None:
    """Upload training.log as logs/<experiment>/training_latest.log (after an epoch's `result`, or the report)."""
    return upload_log(run.storage, run.layout, run.log_path)


@task(name="checkpoint_published", task_run_name="checkpoint_published[{epoch}]", cache_policy=NO_CACHE, **IO_RETRY)
def checkpoint_published(run: RunSession, epoch: int, result: dict[str, Any]) -> bool:
    """Whether an epoch's checkpoint is already in storage (asked by a retried run whose work file is gone)."""
    return is_published(run.storage, run.layout, epoch, result["checkpoint_sha256"])
