"""Upload tasks, run next to training: checkpoints, TensorBoard event files, the training log."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pokevq.train.publish import is_published, publish_checkpoint, upload_log
from tasks.common import IO_RETRY, IO_TASK, session


@task(name="upload_checkpoint", task_run_name="upload_checkpoint[{epoch}]", **IO_TASK)
def upload_checkpoint(config: dict[str, Any], plan: dict[str, Any], epoch: int, result: dict[str, Any]) -> dict[str, str]:
    """Publish the epoch's checkpoint; `latest` and `best` move only once it is verified in storage.

    An epoch that a budget ended early publishes its step checkpoint (`checkpoint_step_S.pt`) instead.
    """
    run = session(config, plan)
    return publish_checkpoint(
        run.storage, run.layout, result["checkpoint_path"], epoch, result["checkpoint_sha256"], result["is_best"],
        global_step=result.get("global_step"), mid_epoch=bool(result.get("partial")),
    )


@task(name="upload_tensorboard", task_run_name="upload_tensorboard[{epoch}]", **IO_TASK)
def upload_tensorboard(config: dict[str, Any], plan: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Upload only event files that are new or changed since the last epoch."""
    run = session(config, plan)
    uploaded = run.tensorboard.sync()
    return {"uploaded": len(uploaded), "uri": run.storage.uri(run.layout.tensorboard)}


@task(name="upload_logs", task_run_name="upload_logs[{epoch}]", **IO_TASK)
def upload_logs(config: dict[str, Any], plan: dict[str, Any], epoch: int | str) -> str | None:
    """Upload training.log as logs/<experiment>/training_latest.log."""
    run = session(config, plan)
    return upload_log(run.storage, run.layout, run.log_path)


@task(name="checkpoint_published", task_run_name="checkpoint_published[{epoch}]", cache_policy=NO_CACHE, **IO_RETRY)
def checkpoint_published(config: dict[str, Any], plan: dict[str, Any], epoch: int, sha256: str) -> bool:
    """Whether an epoch's checkpoint is already in storage (asked by a retried run whose work file is gone)."""
    run = session(config, plan)
    return is_published(run.storage, run.layout, epoch, sha256)
