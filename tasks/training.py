"""prepare_training and train_epoch: one task run per epoch, so each shows in the UI and can be retried."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pokevq.run.session import RunSession, Stopwatch
from tasks.common import per_flow_run


@task(name="prepare_training", task_run_name="prepare_training", cache_policy=NO_CACHE)
def prepare_training(run: RunSession, manifest: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    """Build the model and loaders over the indexed, warmed frames, resuming from a checkpoint when asked.

    Returns where training starts.
    """
    with Stopwatch(run, "prepare_training"):
        run.manifest_at(manifest["manifest_uri"])
        trainer = run.trainer
    return {
        "start_epoch": trainer.start_epoch,
        "global_step": trainer.global_step,
        "device": str(trainer.device),
        "data_path": warm.get("data_path", trainer.reader.describe()),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }


@task(name="train_epoch", task_run_name="train_epoch[{epoch}]", cache_key_fn=per_flow_run)
def train_epoch(run: RunSession, epoch: int) -> dict[str, Any]:
    """Train one epoch, evaluate on the validation episodes and write the epoch's checkpoint locally.

    The flow runs it after what came before it (`wait_for`): prepare_training, or the previous epoch.
    """
    run.renew_lease()  # stops here when another run has taken the experiment over
    with Stopwatch(run, "train_epochs"):
        return run.train_epoch(epoch)
