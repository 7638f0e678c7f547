"""prepare_training and train_epoch: one task run per epoch, so each shows in the UI and can be retried."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pokevq.run.session import Stopwatch
from tasks.common import per_flow_run, session


@task(name="prepare_training", task_run_name="prepare_training", cache_policy=NO_CACHE)
def prepare_training(config: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Build the model and loaders, resuming from a checkpoint when asked; returns where training starts."""
    run = session(config, plan)
    with Stopwatch(run, "prepare_training"):
        trainer = run.trainer
    return {
        "start_epoch": trainer.start_epoch,
        "global_step": trainer.global_step,
        "device": str(trainer.device),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }


@task(name="train_epoch", task_run_name="train_epoch[{epoch}]", cache_key_fn=per_flow_run)
def train_epoch(config: dict[str, Any], plan: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Train one epoch, evaluate on the validation episodes and write the epoch's checkpoint locally."""
    run = session(config, plan)
    run.renew_lease()  # stops here when another run has taken the experiment over
    with Stopwatch(run, "train_epochs"):
        return run.trainer_after(epoch - 1).train_epoch(epoch).to_dict()
