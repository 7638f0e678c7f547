"""The data path: from a bucket of frames to training batches.

One job per module, read top to bottom:
`frames` (decode one frame) → `manifest` (list and split by episode) → `cache` (frame bytes on
local disk) → `decoded` (decoded frames, memory-mapped) → `shards` (where packed frames lie) and
`pack` (write shards) → `source` (a frame's bytes from wherever they are) → `dataset` and
`loader` (the cached path: every frame fits the cache) → `plan`, `shard_cache` and `streaming`
(the streaming path: buckets of any size) → `choose` (which path a run takes) → `warm` (fill the
cache before training).
"""

from pokevq.data.cache import FrameCache
from pokevq.data.dataset import Batch, FrameDataset, collate_frames
from pokevq.data.loader import EpochSampler, make_loader
from pokevq.data.source import FrameSource
from pokevq.data.warm import WARM_THREADS, warm_cache

__all__ = [
    "Batch",
    "EpochSampler",
    "FrameCache",
    "FrameDataset",
    "FrameSource",
    "WARM_THREADS",
    "collate_frames",
    "make_loader",
    "warm_cache",
]
