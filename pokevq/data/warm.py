"""Fill the local store before training: every shard and kept loose unit of a bucket that fits the cache.

A bucket larger than the cache is not warmed: its first epoch's own reads stream it (a warm-up
would evict what it read before training could use it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.data.streaming import StreamOptions

log = logging.getLogger(__name__)


def warm_units(reader: BucketReader, manifest: pd.DataFrame, source: FrameSource, image_size: tuple[int, int], *,
               progress: bool = True, enabled: bool = True) -> dict[str, Any]:
    """Read each unit of the run once (training frames first); returns what was read and what was already there."""
    from tqdm.auto import tqdm

    stats: dict[str, Any] = {"requested": 0, "hits": 0, "misses": 0, "missing": 0, "from_shards": reader.packed,
                             "bytes": 0, "seconds": 0.0}
    if not enabled or not reader.fits or not len(manifest):
        return stats
    started = time.perf_counter()
    before = reader.shard_cache.used_bytes() if reader.shard_cache is not None else 0
    bar = tqdm(total=len(manifest), desc="warm cache", unit="frame", disable=None if progress else True)

    def counted(frames: int, unreadable: int, hit: bool) -> None:
        stats["requested"] += frames
        stats["hits" if hit else "misses"] += frames - unreadable
        stats["missing"] += unreadable
        bar.update(frames)

    splits = ([manifest[manifest["split"] == split] for split in ("train", "val")] if "split" in manifest.columns
              else [manifest])
    try:
        for rows in splits:
            if len(rows):
                options = StreamOptions(batch_size=1, seed=0, shuffle=False, keep_loose=reader.keep_loose)
                reader.frames_of(rows, source, image_size, options).fill(counted)
    finally:
        bar.close()
    stats["bytes"] = max(0, (reader.shard_cache.used_bytes() if reader.shard_cache is not None else 0) - before)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    log.info("Cache warmed: %d frames (%d already on local disk, %d read%s, %.1f MB stored) in %.2fs into %s",
             stats["requested"], stats["hits"], stats["misses"],
             f", {stats['missing']} unreadable" if stats["missing"] else "", stats["bytes"] / 1e6, stats["seconds"],
             reader.shard_cache.directory if reader.shard_cache is not None else source.cache.directory)
    return stats
