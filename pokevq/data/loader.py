"""The trainer's DataLoader over a `FrameDataset`: a (seed, epoch) permutation, workers, prefetching."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from pokevq.data.dataset import Batch, FrameDataset, collate_frames


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch): a resumed run sees the same order it would have."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """`skip`: frames of this epoch already trained (a mid-epoch resume starts after them)."""
        self.epoch = epoch
        self.skip = max(0, min(int(skip), self.length))

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.skip, self.length))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist()[self.skip:])

    def __len__(self) -> int:
        return self.length - self.skip


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
        """This epoch's order; with a mid-epoch `position` ({"kind": "cached", "samples": n}), what is left of it."""
        skip = int(position["samples"]) if position and int(position.get("epoch", -1)) == epoch else 0
        self.sampler.set_epoch(epoch, skip)  # type: ignore[attr-defined]
        self._skip = skip

    def tracker(self, epoch: int) -> CachedTracker:
        return CachedTracker(epoch, getattr(self, "_skip", 0))

    def __iter__(self) -> Any:
        dataset = self.dataset
        decoded = isinstance(dataset, FrameDataset) and dataset.decoded_share() >= IN_PROCESS_WHEN_DECODED
        if self.num_workers > 0 and decoded:
            return _prefetched_batches(self)
        return super().__iter__()


class CachedTracker:
    """Counts the frames of an epoch the trainer has taken, for a mid-epoch checkpoint's position."""

    def __init__(self, epoch: int, already: int = 0) -> None:
        self.epoch = epoch
        self.samples = already

    def advance(self, batch: Batch) -> None:
        self.samples += len(batch.keys) + len(batch.skipped)

    def position(self) -> dict[str, Any]:
        return {"kind": "cached", "epoch": self.epoch, "samples": self.samples}


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
