"""Which data path a run takes, and the loaders it builds.

- **cached**: every frame of the run fits the local cache (`--max-cache-size` frames and
  `--max-cache-bytes`): frames are read once, kept as bytes and decoded rows, and epochs read
  the local copies in a (seed, epoch) permutation.
- **streaming**: the bucket is larger than the cache. Packed frames are read shard by shard
  (whole shards, a few ahead, kept on disk within `--max-cache-bytes`), loose frames tens at a
  time, kept as decoded units when they fit (`local_units`); see `streaming`.

`--data-path auto` (the default) picks cached when it fits, else streaming.
"""

from __future__ import annotations

import heapq
import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pokevq.data import local_units
from pokevq.data.dataset import FrameDataset
from pokevq.data.loader import make_loader
from pokevq.data.plan import WINDOW_UNITS
from pokevq.data.shard_cache import SHARDS_SUBDIR, ShardCache
from pokevq.data.shards import ShardIndex
from pokevq.data.source import FrameSource
from pokevq.data.streaming import StreamingFrames, StreamOptions, make_streaming_loader

log = logging.getLogger(__name__)

DEFAULT_SHARD_CACHE_BYTES = 8 * 1024**3  # without --max-cache-bytes: 8 GiB, at most half the free disk


def fits_cache(manifest: pd.DataFrame, max_frames: int, max_bytes: int | None) -> bool:
    if len(manifest) > max_frames:
        return False
    return max_bytes is None or int(pd.to_numeric(manifest["size"]).sum()) <= max_bytes


def choose(manifest: pd.DataFrame, requested: str, max_frames: int, max_bytes: int | None) -> str:
    if requested != "auto":
        return requested
    return "cached" if fits_cache(manifest, max_frames, max_bytes) else "streaming"


PREVIEW_RESERVE_FRAMES = 8  # frames the trainer's previews keep in the frame cache next to the shards


def shard_cache_budget(source: FrameSource, max_bytes: int | None, manifest: pd.DataFrame) -> int:
    """Bytes the shard files may take: the limit less the frame cache's files and room for the previews."""
    if max_bytes is None:
        free = shutil.disk_usage(source.cache.directory).free
        max_bytes = min(DEFAULT_SHARD_CACHE_BYTES, free // 2)
    sizes = pd.to_numeric(manifest["size"]) if len(manifest) else pd.Series([], dtype="int64")
    previews = int(sizes.nlargest(PREVIEW_RESERVE_FRAMES).sum())
    return max(0, int(max_bytes) - source.cache.total_bytes() - previews)


def window_units(budget: int, largest_shard: int, readers: int, read_ahead: int) -> int:
    """Shards the shuffle mixes at once: up to 8, as many as the cache holds for every reader next to read-ahead."""
    if largest_shard <= 0:
        return WINDOW_UNITS  # loose frames only: chunks are in memory, small
    per_reader = budget // (largest_shard * max(1, readers))
    return max(1, min(WINDOW_UNITS, per_reader - read_ahead - 1))


@dataclass
class DataPath:
    """The data path of a run, decided once (before training) and checked against the cache limit."""

    mode: str
    index: ShardIndex | None = None
    shard_cache: ShardCache | None = None
    # Frames of the run in each shard that holds frames of both splits: one rank reads such a shard, for both.
    shared_shards: dict[str, int] = field(default_factory=dict)
    keep_loose: bool = False  # the loose frames' decoded units fit the cache next to the shards: kept after epoch 1

    @classmethod
    def decide(cls, manifest: pd.DataFrame, source: FrameSource, *, requested: str, max_frames: int,
               max_bytes: int | None, passes: int = 2) -> DataPath:
        """`passes`: how often the frames will be read (a single pass keeps no decoded units)."""
        mode = choose(manifest, requested, max_frames, max_bytes)
        if mode == "cached":
            return cls("cached")
        index = ShardIndex.discover(source.storage, manifest["key"].tolist()) if len(manifest) else None
        cache = ShardCache(source.cache.directory / SHARDS_SUBDIR, shard_cache_budget(source, max_bytes, manifest))
        path = cls("streaming", index, cache)
        if index is not None:
            located = index.locate_all(manifest["key"].tolist(), manifest["etag"].astype(str).tolist())
            sizes = located.shard_sizes
            if len(sizes):
                cache.check_fits(int(sizes.max()), source.storage.uri(index.prefix), max_bytes)
            packed = int((located.shard >= 0).sum())
            if "split" in manifest.columns and len(located.shard_names):
                rows = pd.DataFrame({"shard": located.shard, "split": manifest["split"].to_numpy()})
                rows = rows[rows["shard"] >= 0]
                splits = rows.groupby("shard")["split"].agg(["nunique", "size"])
                path.shared_shards = {located.shard_names[int(shard)]: int(size)
                                      for shard, size in splits.loc[splits["nunique"] > 1, "size"].items()}
            loose = located.shard < 0
        else:
            packed, loose = 0, np.ones(len(manifest), dtype=bool)
        loose_bytes = int(pd.to_numeric(manifest["size"]).to_numpy()[loose].sum()) if len(manifest) else 0
        units = loose_bytes * local_units.BYTES_PER_PNG_BYTE
        # Shards pass through the same cache: loose frames' units may take half of it when there are shards.
        path.keep_loose = passes > 1 and loose_bytes > 0 and units <= cache.max_bytes * (0.5 if packed else 1.0)
        log.info(
            "Data path: streaming %d frames (%d packed in shards, %d read from their own objects) through a "
            "shard cache of %.1f MB in %s", len(manifest), packed, len(manifest) - packed,
            cache.max_bytes / 1e6, cache.directory,
        )
        if path.keep_loose:
            log.info("The %d unpacked frames are kept on local disk as decoded units (about %.1f MB) the first time "
                     "they are read: later epochs read them there", len(manifest) - packed, units / 1e6)
        elif packed < len(manifest) * 0.5:
            log.warning("Most frames are not packed and do not fit the cache decoded (about %.1f MB against %.1f MB): "
                        "each is fetched and decoded every epoch. Run `pokevq pack` on the frames prefix for "
                        "whole-shard reads.", units / 1e6, cache.max_bytes / 1e6)
        return path

    def pins(self, world_size: int) -> dict[str, int]:
        """The rank that reads each shard holding frames of both splits (its training and its validation frames),
        the same in every epoch and for both splits: largest first, to the rank with the fewest frames so far."""
        if world_size <= 1:
            return {}
        heap = [(0, rank) for rank in range(world_size)]
        pins = {}
        for name, size in sorted(self.shared_shards.items(), key=lambda item: (-item[1], item[0])):
            load, rank = heapq.heappop(heap)
            pins[name] = rank
            heapq.heappush(heap, (load + size, rank))
        return pins

    def loader(self, rows: pd.DataFrame, source: FrameSource, image_size: tuple[int, int], *, batch_size: int,
               seed: int, shuffle: bool, num_workers: int, pin_memory: bool, rank: int = 0,
               world_size: int = 1) -> Any:
        if self.mode == "cached":
            return make_loader(FrameDataset(rows, source, image_size), batch_size=batch_size, shuffle=shuffle,
                               seed=seed, num_workers=num_workers, pin_memory=pin_memory, rank=rank,
                               world_size=world_size)
        assert self.shard_cache is not None
        # Pinned memory means an accelerator: it expands packed frames' palette indices; on a CPU the workers do.
        options = StreamOptions(batch_size=batch_size, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                                expand_on_device=pin_memory, keep_loose=self.keep_loose)
        dataset = StreamingFrames(rows["key"].tolist(), rows["etag"].astype(str).tolist(), source.storage, self.index,
                                  self.shard_cache, image_size, options, pins=self.pins(world_size))
        options.window_units = window_units(self.shard_cache.max_bytes, dataset.largest_shard,
                                            max(1, num_workers) * world_size, options.read_ahead)
        return make_streaming_loader(dataset, num_workers=num_workers, pin_memory=pin_memory)
