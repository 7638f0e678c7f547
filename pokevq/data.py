"""From manifest rows to training batches: read through the cache, decode, skip and count bad frames.

Bad frames travel with the batch (not in dataset state) so counts survive DataLoader
worker processes and reach the log and the report.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pokevq.cache import FrameCache
from pokevq.errors import ConnectError, CredentialsNotFoundError, FrameDecodeError, InvalidCredentialsError, AccessDeniedError, ObjectNotFoundError, StorageError
from pokevq.frames import decode_frame
from pokevq.storage import Storage

log = logging.getLogger(__name__)

# Errors that mean "the store is unusable", which no amount of skipping frames fixes.
FATAL_STORAGE_ERRORS = (ConnectError, CredentialsNotFoundError, InvalidCredentialsError, AccessDeniedError)


class FrameSource:
    """Frame bytes by (key, etag), through the local cache."""

    def __init__(self, storage: Storage, cache: FrameCache) -> None:
        self.storage = storage
        self.cache = cache

    def read(self, key: str, etag: str) -> tuple[bytes, bool]:
        """The frame's bytes and whether they came from the cache."""
        fetched = False

        def fetch() -> bytes:
            nonlocal fetched
            fetched = True
            return self.storage.get_bytes(key)

        data = self.cache.get(self.storage.namespace, key, etag, fetch)
        return data, not fetched


@dataclass
class Batch:
    images: torch.Tensor | None  # (B, 3, H, W) float in [0, 1]; None when every frame was bad
    keys: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    hits: int = 0
    misses: int = 0

    def __len__(self) -> int:
        return len(self.keys)


class FrameDataset(Dataset):
    """Frames of one split; an item is (tensor or None, key, status) with status 'hit', 'miss' or a skip reason."""

    def __init__(self, manifest: pd.DataFrame, source: FrameSource, image_size: tuple[int, int]) -> None:
        self.keys = manifest["key"].tolist()
        self.etags = manifest["etag"].astype(str).tolist()
        self.source = source
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str, str]:
        key = self.keys[index]
        try:
            data, hit = self.source.read(key, self.etags[index])
        except FATAL_STORAGE_ERRORS:
            raise
        except ObjectNotFoundError:
            return None, key, "object disappeared from storage"
        except StorageError as exc:
            return None, key, f"unreadable: {exc}"
        try:
            return decode_frame(data, self.image_size), key, "hit" if hit else "miss"
        except FrameDecodeError as exc:
            return None, key, str(exc)


def collate_frames(items: Sequence[tuple[torch.Tensor | None, str, str]]) -> Batch:
    good = [tensor for tensor, _, _ in items if tensor is not None]
    skipped = [(key, status) for tensor, key, status in items if tensor is None]
    return Batch(
        images=torch.stack(good) if good else None,
        keys=[key for tensor, key, _ in items if tensor is not None],
        skipped=skipped,
        hits=sum(1 for tensor, _, status in items if tensor is not None and status == "hit"),
        misses=sum(1 for tensor, _, status in items if tensor is not None and status == "miss"),
    )


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch): a resumed run sees the same order it would have."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def make_loader(
    dataset: FrameDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose workers are spawned (safe next to the orchestrator's threads) and kept alive."""
    options: dict[str, Any] = {}
    if num_workers > 0:
        options = dict(multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=4)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle),
        num_workers=num_workers,
        collate_fn=collate_frames,
        pin_memory=pin_memory,
        **options,
    )


def warm_cache(
    source: FrameSource,
    manifest: pd.DataFrame,
    *,
    limit: int,
    threads: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Download up to `limit` frames into the cache concurrently; training frames first."""
    from tqdm.auto import tqdm

    ordered = pd.concat([manifest[manifest["split"] == "train"], manifest[manifest["split"] != "train"]])
    rows = list(zip(ordered["key"], ordered["etag"].astype(str)))[:limit]
    stats = {"requested": len(rows), "hits": 0, "misses": 0, "bytes": 0, "missing": 0, "seconds": 0.0}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-warm") as pool:
        futures = [pool.submit(source.read, key, etag) for key, etag in rows]
        bar = tqdm(total=len(futures), desc="warm cache", unit="frame", disable=None if progress else True)
        try:
            for future in as_completed(futures):
                try:
                    data, hit = future.result()
                except ObjectNotFoundError:
                    stats["missing"] += 1
                else:
                    stats["hits" if hit else "misses"] += 1
                    stats["bytes"] += len(data)
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
    stats["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "Cache warmed: %d frames (%d hits, %d downloaded, %.1f MB) in %.2fs into %s",
        stats["requested"],
        stats["hits"],
        stats["misses"],
        stats["bytes"] / 1e6,
        stats["seconds"],
        source.cache.directory,
    )
    return stats
