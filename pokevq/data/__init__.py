"""The data path: from a bucket of frames to training batches.

One job per module, read top to bottom:
`frames` (decode one frame) → `manifest` (list and split by episode) → `cache` (frame bytes on
local disk) → `decoded` (decoded frames, memory-mapped) → `shards` (where packed frames lie) and
`pack` (write shards) → `source` (a frame's bytes from wherever they are) → `dataset` and
`loader` (the cached path: every frame fits the cache) → `plan`, `shard_cache` and `streaming`
(the streaming path: buckets of any size) → `choose` (which path a run takes) → `warm` (fill the
cache before training).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The public names, imported on first use so `pokevq --help` does not load torch.
_HOMES = {
    "Batch": "dataset",
    "FrameDataset": "dataset",
    "collate_frames": "dataset",
    "EpochSampler": "loader",
    "make_loader": "loader",
    "FrameCache": "cache",
    "FrameSource": "source",
    "WARM_THREADS": "warm",
    "warm_frames": "warm",
    "DataPath": "choose",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pokevq.data' has no attribute {name!r}")
    return getattr(import_module(f"pokevq.data.{_HOMES[name]}"), name)
