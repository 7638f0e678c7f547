"""Makes one training rank raise, as a bug or a device error would: put this folder on PYTHONPATH.

`POKEVQ_TEST_RAISE_IN_RANK=N` makes rank N's trainer raise a RuntimeError when it starts an epoch.
Every other process (rank 0, the other ranks) starts as usual: Python imports this file at start-up.
"""

import os

if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get("POKEVQ_TEST_RAISE_IN_RANK"):
    from pokevq.train.trainer import Trainer

    def _raise(self, epoch, *args, **kwargs):
        raise RuntimeError(f"CUDA error: an illegal memory access was encountered (injected in epoch {epoch})")

    Trainer.train_epoch = _raise
