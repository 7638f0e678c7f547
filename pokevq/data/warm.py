"""Fill the local cache before training: many frames in flight, or a few large reads from shards."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pandas as pd

from pokevq.data.decoded import DecodedFrameStore
from pokevq.data.frames import decode_frame_uint8
from pokevq.data.shards import read_spans
from pokevq.data.source import FrameSource
from pokevq.errors import FrameDecodeError, ObjectNotFoundError

log = logging.getLogger(__name__)

# Concurrent downloads when warming the cache: under S3's ~20 ms first-byte latency a request
# mostly waits, so 64 in flight (the client's connection pool) keep a 2-core machine busy.
WARM_THREADS = 64


def warm_frames(
    source: FrameSource,
    manifest: pd.DataFrame,
    *,
    limit: int,
    threads: int = WARM_THREADS,
    progress: bool = True,
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Download up to `limit` frames into the cache concurrently; training frames first.

    When the frames were packed into shards, runs of frames are read from the shards a few
    MB per request instead of one request per frame. With `image_size`, each frame is also
    decoded into its split's decoded store (as `FrameDataset` would on first read), so the
    first epoch already skips PNG decoding.
    """
    from tqdm.auto import tqdm

    ordered = pd.concat([manifest[manifest["split"] == "train"], manifest[manifest["split"] != "train"]])
    rows = list(zip(ordered["key"], ordered["etag"].astype(str)))[:limit]
    stats: dict[str, Any] = {
        "requested": len(rows), "hits": 0, "misses": 0, "bytes": 0, "missing": 0, "from_shards": 0, "seconds": 0.0
    }
    started = time.perf_counter()
    lock = threading.Lock()
    targets = _decode_targets(source, manifest, image_size) if image_size is not None else {}
    bar = tqdm(total=len(rows), desc="warm cache", unit="frame", disable=None if progress else True)

    def record(key: str, data: bytes, hit: bool, shard: bool = False) -> None:
        target = targets.get(key)
        if target is not None and target[0].get(target[1]) is None:
            try:
                target[0].put(target[1], decode_frame_uint8(data, image_size))  # type: ignore[arg-type]
            except FrameDecodeError:
                pass  # counted and reported when training reads it
        with lock:
            stats["hits" if hit else "misses"] += 1
            stats["bytes"] += len(data)
            stats["from_shards"] += int(shard)
        bar.update(1)

    def one(key: str, etag: str) -> None:
        try:
            data, hit = source.read(key, etag)
        except ObjectNotFoundError:
            with lock:
                stats["missing"] += 1
            bar.update(1)
            return
        record(key, data, hit)

    try:
        loose = rows
        index = source.shards_for([key for key, _ in rows]) if rows else None
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-warm") as pool:
            if index is not None:
                namespace = source.storage.namespace
                cached = [(k, e) for k, e in rows if source.cache.contains(namespace, k, e)]
                cached_set = set(cached)
                spans, loose = index.plan((k, e) for k, e in rows if (k, e) not in cached_set)

                def deliver(key: str, etag: str, data: bytes) -> None:
                    source.cache.put(namespace, key, etag, data)
                    record(key, data, hit=False, shard=True)

                loose = loose + cached + read_spans(source.storage, spans, deliver, threads=min(threads, 16))
            futures = [pool.submit(one, key, etag) for key, etag in loose]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()
    stats["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "Cache warmed: %d frames (%d hits, %d downloaded%s, %.1f MB) in %.2fs into %s",
        stats["requested"],
        stats["hits"],
        stats["misses"],
        f", {stats['from_shards']} from shards" if stats["from_shards"] else "",
        stats["bytes"] / 1e6,
        stats["seconds"],
        source.cache.directory,
    )
    return stats


def _decode_targets(
    source: FrameSource, manifest: pd.DataFrame, image_size: tuple[int, int]
) -> dict[str, tuple[DecodedFrameStore, int]]:
    """key -> (its split's decoded store, its row there): the stores `FrameDataset` opens for each split."""
    targets: dict[str, tuple[DecodedFrameStore, int]] = {}
    for split in ("train", "val"):
        rows = manifest[manifest["split"] == split]
        keys, etags = rows["key"].tolist(), rows["etag"].astype(str).tolist()
        store = DecodedFrameStore.open(source.cache, source.storage.namespace, keys, etags, image_size)
        if store is not None:
            targets.update((key, (store, i)) for i, key in enumerate(keys))
    return targets
