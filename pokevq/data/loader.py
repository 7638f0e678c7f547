"""The trainer's DataLoader over a `FrameDataset`: a (seed, epoch) permutation, workers, prefetching."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pokevq.data.dataset import Batch, FrameDataset, collate_frames
from pokevq.data.plan import continue_share


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch): a resumed run sees the same order it would have.

    In several processes each rank takes its block of every global batch (`continue_share`).
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.segments: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int, segments: list[tuple[int, int]] | None = None) -> None:
        """`segments`: (world size, frames each rank took) of this epoch so far; a resume starts after them."""
        self.epoch = epoch
        self.segments = list(segments or [])
        self._indices: list[int] | None = None

    def indices(self) -> list[int]:
        if getattr(self, "_indices", None) is None:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
                order = torch.randperm(self.length, generator=generator).numpy()
            else:
                order = np.arange(self.length)
            mine = continue_share(order, self.segments, self.rank, self.world_size, self.batch_size, even=self.shuffle)
            self._indices = mine.tolist()
        return self._indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


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

    def set_epoch(self, epoch: int, position: dict[str, Any] | None = None) -> None:
        """This epoch's order; with a mid-epoch `position` ({"kind": "cached", "samples": n, ...}), what is left."""
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        resumed = position if position and int(position.get("epoch", -1)) == epoch else None
        self._tracker = CachedTracker.resuming(epoch, resumed, sampler.world_size)
        sampler.set_epoch(epoch, self._tracker.earlier + [(self._tracker.world_size, self._tracker.samples)])

    def tracker(self, epoch: int) -> CachedTracker:
        return getattr(self, "_tracker", None) or CachedTracker(epoch)

    def __iter__(self) -> Any:
        dataset = self.dataset
        decoded = isinstance(dataset, FrameDataset) and dataset.decoded_share() >= IN_PROCESS_WHEN_DECODED
        if self.num_workers > 0 and decoded:
            return _prefetched_batches(self)
        return super().__iter__()


class CachedTracker:
    """Counts the frames of an epoch each rank has taken, for a mid-epoch checkpoint's position.

    `earlier` holds (world size, frames each rank took) of the epoch's parts that ran in
    another number of processes, so a resume in any number of them continues the same epoch.
    """

    def __init__(self, epoch: int, already: int = 0, world_size: int = 1,
                 earlier: list[tuple[int, int]] | None = None) -> None:
        self.epoch = epoch
        self.samples = already
        self.world_size = world_size
        self.earlier = list(earlier or [])

    @classmethod
    def resuming(cls, epoch: int, position: dict[str, Any] | None, world_size: int) -> CachedTracker:
        if not position:
            return cls(epoch, 0, world_size)
        earlier = [(int(w), int(n)) for w, n in position.get("earlier", [])]
        saved_world, samples = int(position.get("world_size", 1)), int(position["samples"])
        if saved_world == world_size:
            return cls(epoch, samples, world_size, earlier)
        return cls(epoch, 0, world_size, [*earlier, (saved_world, samples)])

    def advance(self, batch: Batch) -> None:
        self.samples += len(batch.keys) + len(batch.skipped)

    def position(self) -> dict[str, Any]:
        return {"kind": "cached", "epoch": self.epoch, "samples": self.samples, "world_size": self.world_size,
                "earlier": [list(part) for part in self.earlier]}


_END = object()


def _prefetched_batches(loader: DataLoader, depth: int = 4) -> Iterator[Batch]:
    dataset, collate = loader.dataset, loader.collate_fn
    batches = [list(indices) for indices in loader.batch_sampler]  # this epoch's order (EpochSampler)
    pending: queue.Queue[Any] = queue.Queue(maxsize=depth)
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
                if loader.pin_memory:
                    batch.pin_memory()
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


def shutdown_workers(loader: Any) -> None:
    """Stop a DataLoader's persistent worker processes now (they would otherwise linger until collected)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def make_loader(
    dataset: FrameDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader whose workers are spawned (safe next to the orchestrator's threads) and kept alive."""
    options: dict[str, Any] = {}
    if num_workers > 0:
        options = dict(multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=4)
    return FrameLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle, rank, world_size, batch_size),
        num_workers=num_workers,
        collate_fn=collate_frames,
        pin_memory=pin_memory,
        **options,
    )
