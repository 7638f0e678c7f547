"""Where each output of an experiment lives: the bucket layout of the README, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pokevq.config import StorageOptions, TrainConfig

# The file names of an experiment's checkpoint folder, the same in the bucket and in the local work folder.
LATEST_FILE = "checkpoint_latest.pt"
BEST_FILE = "checkpoint_best.pt"
LEASE_FILE = ".lease.json"
_EPOCH = re.compile(r"checkpoint_epoch_(\d+)\.pt")
_STEP = re.compile(r"checkpoint_step_(\d+)\.pt")
STEP_GLOB = "checkpoint_step_*.pt"


def epoch_file(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch}.pt"


def step_file(global_step: int) -> str:
    """A mid-epoch checkpoint (`--checkpoint-every-steps`, or a budget that ended the run)."""
    return f"checkpoint_step_{global_step}.pt"


def epoch_of(name: str) -> int | None:
    """The epoch an epoch checkpoint's file name holds; None for any other name."""
    match = _EPOCH.fullmatch(name)
    return int(match.group(1)) if match else None


def step_of(name: str) -> int | None:
    """The global step a mid-epoch checkpoint's file name holds; None for any other name."""
    match = _STEP.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Layout:
    """Keys of one experiment's outputs, identical in S3 and in the local fallback."""

    experiment: str
    checkpoint_prefix: str = "checkpoints"
    tensorboard_prefix: str = "tensorboard"
    logs_prefix: str = "logs"
    manifests_prefix: str = "manifests"
    reports_prefix: str = "reports"

    @classmethod
    def for_config(cls, config: TrainConfig) -> Layout:
        return cls.for_run(config.storage, str(config.run.experiment_name))

    @classmethod
    def for_run(cls, storage: StorageOptions, experiment: str) -> Layout:
        return cls(
            experiment=experiment,
            checkpoint_prefix=storage.s3_checkpoint_prefix,
            tensorboard_prefix=storage.s3_tensorboard_prefix,
            logs_prefix=storage.s3_logs_prefix,
        )

    @property
    def checkpoints(self) -> str:
        return f"{self.checkpoint_prefix}/{self.experiment}/"

    def checkpoint(self, epoch: int) -> str:
        return f"{self.checkpoints}{epoch_file(epoch)}"

    def step_checkpoint(self, global_step: int) -> str:
        return f"{self.checkpoints}{step_file(global_step)}"

    @property
    def checkpoint_latest(self) -> str:
        return f"{self.checkpoints}{LATEST_FILE}"

    @property
    def checkpoint_best(self) -> str:
        return f"{self.checkpoints}{BEST_FILE}"

    @property
    def lease(self) -> str:
        return f"{self.checkpoints}{LEASE_FILE}"

    @property
    def tensorboard(self) -> str:
        return f"{self.tensorboard_prefix}/{self.experiment}/"

    @property
    def logs(self) -> str:
        return f"{self.logs_prefix}/{self.experiment}/"

    @property
    def log_latest(self) -> str:
        return f"{self.logs}training_latest.log"

    @property
    def manifest(self) -> str:
        return f"{self.manifests_prefix}/{self.experiment}/manifest.parquet"

    @property
    def report(self) -> str:
        return f"{self.reports_prefix}/{self.experiment}/report.md"

    @property
    def reconstructions(self) -> str:
        return f"{self.reports_prefix}/{self.experiment}/reconstructions.png"
