"""From manifest rows to training batches: read through the cache, decode, skip and count bad frames.

Bad frames travel with the batch (not in dataset state) so counts survive DataLoader
worker processes and reach the log and the report.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pokevq.cache import DecodedFrameStore, FrameCache
from pokevq.errors import ConnectError, CredentialsNotFoundError, FrameDecodeError, InvalidCredentialsError, AccessDeniedError, ObjectNotFoundError, StorageError
from pokevq.frames import decode_frame, decode_frame_uint8
from pokevq.storage import Storage

log = logging.getLogger(__name__)

# Errors that mean "the store is unusable", which no amount of skipping frames fixes.
FATAL_STORAGE_ERRORS = (ConnectError, CredentialsNotFoundError, InvalidCredentialsError, AccessDeniedError)


# Concurrent downloads when warming the cache: under S3's ~20 ms first-byte latency a request
# mostly waits, so 64 in flight (the client's connection pool) keep a 2-core machine busy.
WARM_THREADS = 64
_NO_SHARDS = False


class FrameSource:
    """Frame bytes by (key, etag), through the local cache.

    When the frames were packed (`pokevq pack`), a miss reads the frame's bytes from its
    shard by byte range (and `warm_cache` reads whole runs of frames per request); `shards`
    is looked up next to the frames on first need, or given (a `ShardIndex`, or False for never).
    """

    def __init__(self, storage: Storage, cache: FrameCache, shards: Any = None) -> None:
        self.storage = storage
        self.cache = cache
        self.shards = shards  # None: not looked up yet; False: none; else a ShardIndex
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def shards_for(self, keys: Sequence[str]) -> Any:
        """The shard index covering `keys` (looked up once), or None."""
        if self.shards is None:
            with self._lock:
                if self.shards is None:
                    from pokevq.shards import ShardIndex

                    try:
                        found = ShardIndex.discover(self.storage, keys)
                    except FATAL_STORAGE_ERRORS:
                        raise
                    except Exception as exc:  # noqa: BLE001 - an unreadable index only means no shards
                        log.warning("Ignoring the shard index next to the frames: %s", exc)
                        found = None
                    if found is not None:
                        log.info("Reading frames from %d packed frame(s) in shards under %s", len(found),
                                 self.storage.uri(found.prefix))
                    self.shards = found if found is not None else _NO_SHARDS
        return self.shards or None

    def _fetch(self, key: str, etag: str) -> bytes:
        where = self.shards.locate(key, etag) if self.shards else None
        if where is not None:
            shard, offset, length = where
            try:
                data = self.storage.get_range(shard, offset, offset + length)
                if len(data) == length:
                    return data
            except ObjectNotFoundError:
                pass  # a newer pack replaced that shard: the frame's own object still holds it
        return self.storage.get_bytes(key)

    def read(self, key: str, etag: str) -> tuple[bytes, bool]:
        """The frame's bytes and whether they came from the cache."""
        fetched = False

        def fetch() -> bytes:
            nonlocal fetched
            fetched = True
            return self._fetch(key, etag)

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
    """Frames of one split; an item is (tensor or None, key, status) with status 'hit', 'miss' or a skip reason.

    Decoded frames are kept in a `DecodedFrameStore` next to the byte cache (when the split
    fits the cache), so only the first pass decodes PNGs; `__getitems__` then serves a whole
    batch with one read of the memory-mapped rows.
    """

    def __init__(
        self, manifest: pd.DataFrame, source: FrameSource, image_size: tuple[int, int], *, decoded: bool = True
    ) -> None:
        self.keys = manifest["key"].tolist()
        self.etags = manifest["etag"].astype(str).tolist()
        self.source = source
        self.image_size = image_size
        self.decoded = (
            DecodedFrameStore.open(source.cache, source.storage.namespace, self.keys, self.etags, image_size)
            if decoded
            else None
        )

    def __len__(self) -> int:
        return len(self.keys)

    def decoded_share(self) -> float:
        """Share of this split's frames already in the decoded store (0 without a store)."""
        if self.decoded is None or not self.keys:
            return 0.0
        return self.decoded.filled() / len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str, str]:
        key = self.keys[index]
        if self.decoded is not None:
            row = self.decoded.get(index)
            if row is not None:
                return _to_tensor(row), key, "hit"
        if self.source.shards is None:
            self.source.shards_for(self.keys)
        try:
            data, hit = self.source.read(key, self.etags[index])
        except FATAL_STORAGE_ERRORS:
            raise
        except ObjectNotFoundError:
            return None, key, "object disappeared from storage"
        except StorageError as exc:
            return None, key, f"unreadable: {exc}"
        try:
            frame = decode_frame_uint8(data, self.image_size)
        except FrameDecodeError as exc:
            return None, key, str(exc)
        if self.decoded is not None:
            self.decoded.put(index, frame)
        return _to_tensor(frame), key, "hit" if hit else "miss"

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A batch: straight from the decoded store when every row is there, else item by item."""
        if self.decoded is None or not len(indices) or not bool(self.decoded.ready(indices).all()):
            return [self[i] for i in indices]
        rows = self.decoded.get_many(indices)
        images = _batch_tensor(rows)
        items = _PreparedItems((None, self.keys[i], "hit") for i in indices)
        items.images = images
        return items


class _PreparedItems(list):
    """Items of a batch whose images are already one (B, 3, H, W) tensor."""

    images: torch.Tensor


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], exactly as `decode_frame` returns it."""
    out = np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32)
    out /= 255.0
    return torch.from_numpy(out)


def _batch_tensor(rows: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]; in a worker, allocated in shared memory."""
    b, h, w, c = rows.shape
    if torch.utils.data.get_worker_info() is not None:
        # As torch's default_collate does: the batch crosses to the main process without a copy.
        storage = torch.empty(0)._typed_storage()._new_shared(b * c * h * w, device="cpu")
        out = torch.empty(0).new(storage).resize_(b, c, h, w)
    else:
        out = torch.empty((b, c, h, w), dtype=torch.float32)
    out.copy_(torch.from_numpy(rows).permute(0, 3, 1, 2))
    out.div_(255.0)
    return out


def collate_frames(items: Sequence[tuple[torch.Tensor | None, str, str]]) -> Batch:
    if isinstance(items, _PreparedItems):
        return Batch(images=items.images, keys=[key for _, key, _ in items], hits=len(items))
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


# Once this share of a split's frames is in its decoded store, epochs read the store in-process.
IN_PROCESS_WHEN_DECODED = 0.95


class FrameLoader(DataLoader):
    """The trainer's DataLoader: worker processes while frames need decoding, the decoded store after.

    While a split still has PNGs to decode, batches come from the worker processes (decoding in
    parallel, filling the decoded store). Once the store holds (nearly) every frame, a batch is
    one read of memory-mapped rows, cheaper than shipping a float tensor from a worker: batches
    are then made in this process on a prefetch thread (numpy and torch copies release the GIL,
    so it overlaps the training step). The workers stay alive for a split that needs them again.
    """

    def __iter__(self) -> Any:
        dataset = self.dataset
        if self.num_workers > 0 and isinstance(dataset, FrameDataset) and dataset.decoded_share() >= IN_PROCESS_WHEN_DECODED:
            return _prefetched_batches(self)
        return super().__iter__()


_END = object()


def _prefetched_batches(loader: DataLoader, depth: int = 4) -> Iterator[Batch]:
    import queue

    dataset, collate = loader.dataset, loader.collate_fn
    batches = [list(indices) for indices in loader.batch_sampler]  # this epoch's order (EpochSampler)
    pending: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for indices in batches:
                batch = collate(dataset.__getitems__(indices))
                if loader.pin_memory and batch.images is not None:
                    batch.images = batch.images.pin_memory()
                if not put(batch):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="pokevq-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


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
    return FrameLoader(
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
                from pokevq.shards import read_spans

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
