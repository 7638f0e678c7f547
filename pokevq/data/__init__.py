"""The data path: from a bucket of frames to training batches.

One job per module, read top to bottom:
`frames` (decode one frame) → `manifest` (list and split by episode) → `cache` (frame bytes on
local disk, for single reads) → `shards` (where packed frames lie) and `pack` (write shards) →
`source` (a frame's bytes from wherever they are) → `order` (who reads what, in which order),
`shard_cache` and `local_units` (units on local disk) and `streaming` (batches from units) →
`reader` (how the run reads its bucket: `BucketReader`) → `warm` (fill the local store before training).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The public names, imported on first use so `pokevq --help` does not load torch.
_HOMES = {
    "Batch": "batch",
    "FrameCache": "cache",
    "FrameSource": "source",
    "warm_units": "warm",
    "BucketReader": "reader",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pokevq.data' has no attribute {name!r}")
    return getattr(import_module(f"pokevq.data.{_HOMES[name]}"), name)
