"""`TrainConfig`: every option of a training run, by section, built from the guide's flat names."""

from __future__ import annotations

from typing import Any

from pokevq.config.data import DataOptions
from pokevq.config.distributed import DistributedOptions
from pokevq.config.model import ModelOptions
from pokevq.config.optim import OptimOptions
from pokevq.config.options import Sectioned
from pokevq.config.run import RunOptions
from pokevq.config.schedule import ScheduleOptions
from pokevq.config.storage import StorageOptions
from pokevq.settings import s3_bucket_name


class TrainConfig(Sectioned):
    """Every option of a training run, with the README's names and defaults.

    Made from flat names (`TrainConfig(use_s3=True, num_epochs=5)`, a CLI line, a flow run's
    parameters, a checkpoint's saved dict); held by concern: `config.storage`, `config.run`,
    `config.schedule`, `config.data`, `config.optim`, `config.distributed`, `config.model`.
    """

    SECTIONS = {
        "storage": (StorageOptions, None),
        "run": (RunOptions, None),
        "schedule": (ScheduleOptions, None),
        "data": (DataOptions, None),
        "optim": (OptimOptions, None),
        "distributed": (DistributedOptions, None),
        "model": (ModelOptions, None),
    }
    storage: StorageOptions
    run: RunOptions
    schedule: ScheduleOptions
    data: DataOptions
    optim: OptimOptions
    distributed: DistributedOptions
    model: ModelOptions

    def prepare(self, options: dict[str, Any]) -> dict[str, Any]:
        """Resuming continues the same experiment, in the same bucket; a nightly never falls back."""
        bucket, experiment = resumed_from(options.get("resume"), options.get("s3_checkpoint_prefix", "checkpoints"))
        if not options.get("s3_bucket") and not s3_bucket_name() and options.get("use_s3"):
            options["s3_bucket"] = bucket
        if not options.get("experiment_name") and experiment:
            options["experiment_name"] = experiment
        if options.get("nightly"):
            options["no_fallback"] = True  # a nightly run on a worker's local disk would be lost
        return options


def resumed_from(resume: str | None, checkpoint_prefix: str) -> tuple[str | None, str | None]:
    """Bucket and experiment of `s3://bucket/<checkpoint prefix>/<experiment>/file.pt` (or a local path)."""
    if not resume:
        return None, None
    text = str(resume)
    bucket = None
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://"):].partition("/")
    else:
        key = text.replace("\\", "/")
    parts = [p for p in key.split("/") if p]
    prefix = [p for p in str(checkpoint_prefix).split("/") if p]
    experiment = None
    if len(parts) >= len(prefix) + 2 and parts[-(len(prefix) + 2):-2] == prefix:
        experiment = parts[-2]
    return bucket or None, experiment
