"""The few collectives training needs, over torch.distributed's default process group.

Every function is a no-op (or the identity) in a single process, so the model and the
trainer call them unconditionally and stay one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pokevq import settings
from pokevq.errors import ConfigError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's place on its machine (torchrun's LOCAL_RANK): which GPU it takes."""
    return settings.local_rank() if world_size() > 1 else 0


def rank_batch_size(batch_size: int, world: int) -> int:
    """Frames each of `world` processes trains per step: `--batch-size` stays the global batch."""
    if batch_size % world:
        raise ConfigError(f"batch_size (--batch-size) {batch_size} does not divide evenly over {world} training "
                          f"processes: use a multiple of {world} (it stays the global batch)")
    return batch_size // world


def gather_rows(rows: Tensor) -> tuple[Tensor, int]:
    """Every rank's rows, in rank order, and where this rank's start: ranks may hold different counts."""
    if world_size() == 1:
        return rows, 0
    count = torch.tensor([rows.shape[0]], device=rows.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    start = sum(sizes[: rank()])
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), start


def sync_from_first(*tensors: Tensor) -> None:
    """Copy rank 0's values into every rank's `tensors` (one broadcast of them flattened together)."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.broadcast(flat, src=0)
    at = 0
    for tensor in tensors:
        n = tensor.numel()
        tensor.data.copy_(flat[at:at + n].view_as(tensor).to(tensor.dtype))
        at += n


def smallest(value: int, device: torch.device) -> int:
    """The smallest of every rank's `value` (e.g. frames in this step's batch)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on one (e.g. a time budget spent)."""
    if world_size() == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=device, dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor)


def from_first(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object: a command, a state)."""
    if world_size() == 1:
        return value
    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module a step runs through: DDP over the ranks (gradients all-reduced), the model itself alone.

    The codebook keeps itself identical across ranks (pokevq.model.quantizers), so buffers need no
    broadcast per step.
    """
    if world_size() == 1:
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # 1x1 convolutions' gradients differ from DDP's buckets only in the strides of size-1 dimensions.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def share_from_first(make: Callable[[], Any], take: Callable[[Any], None]) -> None:
    """Rank 0's `make()` handed to every other rank's `take`; nothing at all in one process."""
    if world_size() == 1:
        return
    value = from_first(make() if rank() == 0 else None)
    if rank() != 0:
        take(value)


def on_first(make: Callable[[], Any]) -> Any:
    """`make()` run on rank 0 alone (reading frames, fitting), its result on every rank."""
    return from_first(make() if rank() == 0 else None)


def describe_step(rank_batch: int) -> str:
    """`, 2 processes (DDP), 16 frames each per step` for the model's log line; nothing in one process."""
    return f", {world_size()} processes (DDP), {rank_batch} frames each per step" if world_size() > 1 else ""
