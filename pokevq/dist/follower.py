"""A training process other than rank 0: `python -m pokevq.dist.follower`, started by `pokevq.dist.launch`.

It joins the process group, receives the run's set-up from rank 0, builds its inputs and its
trainer from the same factory as rank 0 (`pokevq.run.inputs`), then trains the epochs rank 0 names. It
writes nothing: checkpoints, TensorBoard and the log are rank 0's.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from pokevq import settings
from pokevq.config import TrainConfig
from pokevq.dist import collectives
from pokevq.dist.launch import join_group
from pokevq.run.inputs import RunInputs
from pokevq.run.validate import StoragePlan
from pokevq.train.trainer import Trainer


class Follower:
    """What one rank keeps between rank 0's commands: its inputs (built as rank 0's are) and its trainer."""

    def __init__(self, setup: dict[str, Any]) -> None:
        config = TrainConfig.from_dict(setup["config"])
        cache_dir = setup["cache_dir"] if settings.on_first_machine() else settings.node_cache_dir()
        self.inputs = RunInputs(config.replace(local_cache_dir=cache_dir),
                                StoragePlan.from_dict(setup["plan"], setup.get("credentials")))
        self.run_id = setup.get("run_id", "")
        self.workdir = tempfile.mkdtemp(prefix=f"pokevq-rank{collectives.rank()}-")
        _ = self.inputs.reader  # the manifest from storage and the reader, before rank 0's first command
        self.trainer: Trainer | None = None

    def build(self) -> None:
        """The trainer, with rank 0's state (shared inside the trainer as it is built)."""
        if self.trainer is not None:
            self.trainer.close()
        self.trainer = self.inputs.trainer(self.workdir, run_id=self.run_id)

    def train(self, epoch: int) -> None:
        assert self.trainer is not None
        self.trainer.train_epoch(epoch)

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
        self.inputs.close()


@record
def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"[rank {settings.torchrun_rank()[0]}] %(levelname)s %(message)s")
    join_group(settings.dist_backend(), *settings.torchrun_rank())
    follower = Follower(collectives.from_first(None))
    try:
        while True:
            command = collectives.from_first(None)
            if command["kind"] == "stop":
                break
            if command["kind"] == "build":
                follower.build()
            elif command["kind"] == "train":
                follower.train(int(command["epoch"]))
    finally:
        follower.close()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
