"""How a run reads its frames, decided once before training: the one data path's settings for this bucket.

Every frame reaches training through units on local disk (`streaming`): packed frames as whole
shards, a few ahead, kept within `--max-cache-bytes` (`shard_cache`); loose frames tens at a
time, kept as decoded units when they fit (`local_units`). A bucket that fits the cache is the
case where every unit stays on disk after its first read (or after `warm`), not another path.
"""

from __future__ import annotations

import heapq
import logging
import shutil
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pokevq.data import local_units
from pokevq.data.order import WINDOW_UNITS
from pokevq.data.shard_cache import SHARDS_SUBDIR, ShardCache
from pokevq.data.shards import ShardIndex
from pokevq.data.source import FrameSource
from pokevq.data.streaming import StreamingFrames, StreamingLoader, StreamOptions, make_streaming_loader

log = logging.getLogger(__name__)

DEFAULT_SHARD_CACHE_BYTES = 8 * 1024**3  # without --max-cache-bytes: 8 GiB, at most half the free disk


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
class BucketReader:
    """The run's frames as units: which are packed, whether loose ones stay on disk, whether all fit the cache."""

    index: ShardIndex | None = None
    shard_cache: ShardCache | None = None
    # Frames of the run in each shard that holds frames of both splits: one rank reads such a shard, for both.
    shared_shards: dict[str, int] = field(default_factory=dict)
    keep_loose: bool = False  # the loose frames' decoded units fit the cache next to the shards: kept after epoch 1
    fits: bool = False  # every unit (shards and kept loose units) fits the cache at once: `warm` fills it
    packed: int = 0  # frames read from shards
    frames: int = 0

    @classmethod
    def decide(cls, manifest: pd.DataFrame, source: FrameSource, *, max_bytes: int | None,
               passes: int = 2) -> BucketReader:
        """`passes`: how often the frames will be read (a single pass keeps no decoded units)."""
        index = ShardIndex.discover(source.storage, manifest["key"].tolist()) if len(manifest) else None
        cache = ShardCache(source.cache.directory / SHARDS_SUBDIR, shard_cache_budget(source, max_bytes, manifest))
        path = cls(index, cache, frames=len(manifest))
        shard_bytes = 0
        if index is not None:
            located = index.locate_all(manifest["key"].tolist(), manifest["etag"].astype(str).tolist())
            sizes = located.shard_sizes
            if len(sizes):
                cache.check_fits(int(sizes.max()), source.storage.uri(index.prefix), max_bytes)
                shard_bytes = int(sizes.sum())
            path.packed = int((located.shard >= 0).sum())
            if "split" in manifest.columns and len(located.shard_names):
                rows = pd.DataFrame({"shard": located.shard, "split": manifest["split"].to_numpy()})
                rows = rows[rows["shard"] >= 0]
                splits = rows.groupby("shard")["split"].agg(["nunique", "size"])
                path.shared_shards = {located.shard_names[int(shard)]: int(size)
                                      for shard, size in splits.loc[splits["nunique"] > 1, "size"].items()}
            loose = located.shard < 0
        else:
            loose = np.ones(len(manifest), dtype=bool)
        loose_bytes = int(pd.to_numeric(manifest["size"]).to_numpy()[loose].sum()) if len(manifest) else 0
        units = loose_bytes * local_units.BYTES_PER_PNG_BYTE
        # Shards pass through the same cache: loose frames' units may take half of it when there are shards.
        path.keep_loose = passes > 1 and loose_bytes > 0 and units <= cache.max_bytes * (0.5 if path.packed else 1.0)
        path.fits = passes > 1 and (path.keep_loose or not loose_bytes) and shard_bytes + (
            units if path.keep_loose else 0) <= cache.max_bytes
        path._announce(units, cache)
        return path

    def _announce(self, units: float, cache: ShardCache) -> None:
        log.info("Data: %s, through a local store of %.1f MB in %s", self.describe(), cache.max_bytes / 1e6,
                 cache.directory)
        loose = self.frames - self.packed
        if self.keep_loose:
            log.info("The %d unpacked frames are kept on local disk as decoded units (about %.1f MB) the first time "
                     "they are read: later epochs read them there", loose, units / 1e6)
        elif self.packed < self.frames * 0.5:
            log.warning("Most frames are not packed and do not fit the cache decoded (about %.1f MB against %.1f MB): "
                        "each is fetched and decoded every epoch. Run `pokevq pack` on the frames prefix for "
                        "whole-shard reads.", units / 1e6, cache.max_bytes / 1e6)

    def describe(self) -> str:
        """One line for the log and the report: where the frames come from and what stays on local disk."""
        loose = self.frames - self.packed
        parts = [f"{self.packed} packed in shards"] if self.packed else []
        if loose:
            kept = " (kept as decoded units)" if self.keep_loose else " (fetched each epoch)"
            parts.append(f"{loose} loose{kept}")
        whole = "all kept on local disk" if self.fits else "streamed (larger than the cache)"
        return f"{self.frames} frames: {', '.join(parts) or 'none'}; {whole}"

    def stall_advice(self, workers: int) -> str:
        """What to do when an epoch waited on its data."""
        if self.fits:
            return f"raise --num-workers (now {workers}); the frames stay on local disk, so later epochs do not wait"
        return (f"pack the frames (`pokevq pack`) so they are read shard by shard, raise --num-workers (now "
                f"{workers}), or give the shard cache more room (--max-cache-bytes)")

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

    def frames_of(self, rows: pd.DataFrame, source: FrameSource, image_size: tuple[int, int],
                  options: StreamOptions) -> StreamingFrames:
        """One split's frames as units, read through this run's local store."""
        assert self.shard_cache is not None
        return StreamingFrames(rows["key"].tolist(), rows["etag"].astype(str).tolist(), source.storage, self.index,
                               self.shard_cache, image_size, options, pins=self.pins(options.world_size))

    def loader(self, rows: pd.DataFrame, source: FrameSource, image_size: tuple[int, int], *, batch_size: int,
               seed: int, shuffle: bool, num_workers: int, pin_memory: bool, rank: int = 0,
               world_size: int = 1) -> StreamingLoader:
        assert self.shard_cache is not None
        # Pinned memory means an accelerator: it expands packed frames' palette indices; on a CPU the workers do.
        options = StreamOptions(batch_size=batch_size, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                                expand_on_device=pin_memory, keep_loose=self.keep_loose)
        dataset = self.frames_of(rows, source, image_size, options)
        options.window_units = window_units(self.shard_cache.max_bytes, dataset.largest_shard,
                                            max(1, num_workers) * world_size, options.read_ahead)
        return make_streaming_loader(dataset, num_workers=num_workers, pin_memory=pin_memory)
