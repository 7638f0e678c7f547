"""One optimizer step: the forward pass under the run's precision, backward, the schedule's rate, the update.

The step owns the model's optimizer and the device it runs on, so loading a checkpoint's weights
and optimizer state happens here too.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from pokevq.config import TrainConfig
from pokevq.dist import collectives
from pokevq.errors import CheckpointError, ConfigError
from pokevq.model.vqvae import VQVAE
from pokevq.train.checkpoint import Checkpoint, check_model_shape, model_shape_differences
from pokevq.train.schedule import learning_rate_at

log = logging.getLogger(__name__)


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present; asking for a missing device is a clear error.

    In several processes on one machine, each takes the GPU of its local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device (--device) cuda was requested but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device (--device) mps was requested but MPS is not available; use --device auto or cpu")
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"nproc_per_node (--nproc-per-node) asks for GPU {local_rank} but this machine has "
                              f"{torch.cuda.device_count()}; use --nproc-per-node auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


class TrainStep:
    """The model's optimizer and the module a step runs through (DDP over several ranks, the model alone)."""

    def __init__(self, model: VQVAE, config: TrainConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device
        # bf16 autocast on CUDA by default; `--precision bf16` on the CPU is the same step, as CI runs it.
        self.use_amp = config.optim.precision == "bf16" or (config.optim.precision == "auto" and device.type == "cuda")
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.learning_rate)
        self.module: torch.nn.Module = model

    def distribute(self) -> None:
        """Step through DDP from now on, when there are several ranks (once every rank holds rank 0's weights)."""
        self.module = collectives.data_parallel(self.model, self.device)

    def autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def __call__(self, images: torch.Tensor, step: int, steps_per_epoch: int) -> Any:
        """Train on `images` as optimizer step `step` (0-based) of a run of `steps_per_epoch`-step epochs."""
        with self.autocast():
            out = self.module(images)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.set_learning_rate(step, steps_per_epoch)
        self.optimizer.step()
        return out

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_learning_rate(self, step: int, steps_per_epoch: int) -> None:
        """The schedule's rate for `step`: a function of the global step, so resuming keeps the curve."""
        optim = self.config.optim
        rate = learning_rate_at(step, peak=optim.learning_rate, schedule=optim.lr_schedule,
                                warmup_steps=optim.warmup_steps,
                                total_steps=self.config.schedule.num_epochs * steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def load(self, state: Checkpoint, name: str) -> None:
        """A checkpoint's weights and optimizer state; the configured learning rate wins over the saved one."""
        check_model_shape(state, self.model.config.to_dict(), name)
        try:
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"Checkpoint {name} does not match the configured model: {first}") from exc
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.optim.learning_rate

    def warm_start(self, state: Checkpoint, name: str) -> None:
        """Model weights (and codebook) only: a new experiment that starts from a good place.

        When the model options changed since that checkpoint (a new architecture, say), the
        nightly trains from scratch rather than fail: the options are the newer decision.
        """
        different = model_shape_differences(state, self.model.config.to_dict())
        if different:
            log.warning("Warm start skipped, training from scratch: Checkpoint %s does not match the configured "
                        "model: %s", name, ", ".join(different))
            return
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"Checkpoint {name} does not match the configured model: {exc}") from exc
        log.info("Warm-started the model from %s (epoch %s of that experiment)", name, state.get("epoch"))
