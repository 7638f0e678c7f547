"""The data path: a split of any size, read unit by unit ahead of the trainer.

Each DataLoader worker takes its share of the epoch (`order`), reads the units it needs a few
ahead on a thread pool (whole shards through the byte-bounded `ShardCache`; loose frames
tens at a time) and yields whole batches, each labelled with (worker, batch number) so the
trainer can record exactly how far an epoch got (`Position`).

The epoch and a resume position reach the workers through a small shared-memory tensor
that the DataLoader hands them at start-up, so persistent workers follow `set_epoch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pokevq.data import local_units, record
from pokevq.data.batch import Batch, batch_tensor
from pokevq.data.expand import device_resizable
from pokevq.data.frames import decode_frame_uint8, packed_rgb
from pokevq.data.order import (
    LOOSE_CHUNK,
    WINDOW_UNITS,
    Position,
    batches_per_worker,
    continued_streams,
    group_units,
    rank_frames,
    segment_world,
    unit_owners,
    worker_streams,
)
from pokevq.data.shard_cache import ShardCache
from pokevq.data.shards import ShardIndex
from pokevq.errors import (
    FATAL_STORAGE_ERRORS,
    FrameDecodeError,
    ObjectNotFoundError,
    StorageError,
)
from pokevq.storage import Storage

log = logging.getLogger(__name__)

READ_AHEAD = 2  # units read beyond those the current batch needs
LOOSE_IN_FLIGHT = 32  # GETs in flight for loose frames, per worker
_CONTROL_SIZE = 4096


@dataclass
class StreamOptions:
    batch_size: int
    seed: int
    shuffle: bool
    rank: int = 0
    world_size: int = 1
    read_ahead: int = READ_AHEAD
    window_units: int = WINDOW_UNITS
    loose_chunk: int = LOOSE_CHUNK
    expand_on_device: bool = False  # packed palette frames cross as indices, expanded by the model's accelerator
    keep_loose: bool = False  # loose frames are kept on local disk as decoded units (`local_units`)


class StreamingFrames(IterableDataset):
    """One split's frames as batches; `set_epoch(epoch, position)` before each pass."""

    def __init__(
        self,
        keys: Sequence[str],
        etags: Sequence[str],
        storage: Storage,
        index: ShardIndex | None,
        cache: ShardCache,
        image_size: tuple[int, int],
        options: StreamOptions,
        pins: dict[str, int] | None = None,
    ) -> None:
        """`pins`: shard name -> the rank that must read it (shards that hold frames of another split too)."""
        self.keys = np.asarray(list(keys), dtype=object)
        self.etags = [str(e) for e in etags]
        self.storage = storage
        self.cache = cache
        self.image_size = image_size
        self.options = options
        n = len(self.keys)
        if index is not None and n:
            located = index.locate_all(self.keys.tolist(), self.etags)
            self.shard_of, self.offset, self.length = located.shard, located.offset, located.length
            self.shard_names, self.shard_sizes = located.shard_names, located.shard_sizes
        else:
            self.shard_of = np.full(n, -1, dtype=np.int32)
            self.offset = self.length = np.zeros(n, dtype=np.int64)
            self.shard_names, self.shard_sizes = [], np.zeros(0, dtype=np.int64)
        self.units = group_units(self.shard_of, self.offset, options.loose_chunk)
        self.unit_of = self.units.unit_of(n)
        pin_of_shard = np.array([(pins or {}).get(name, -1) for name in self.shard_names], dtype=np.int64)
        self.pins = (np.where(self.units.shard >= 0, pin_of_shard[np.maximum(self.units.shard, 0)], -1)
                     if len(pin_of_shard) else None)
        self.control = torch.zeros(_CONTROL_SIZE, dtype=torch.int64).share_memory_()

    # ------------------------------------------------------------------ facts
    @property
    def packed(self) -> int:
        return int((self.shard_of >= 0).sum())

    @property
    def largest_shard(self) -> int:
        return int(self.shard_sizes.max()) if len(self.shard_sizes) else 0

    def batches(self, workers: int) -> int:
        """Batches of one epoch on this rank (every rank has as many)."""
        per_rank = len(self.keys) // max(1, self.options.world_size)
        return -(-per_rank // self.options.batch_size) if per_rank else 0

    # --------------------------------------------------------------- control
    def set_epoch(self, epoch: int, position: Position | None = None) -> None:
        values = [int(epoch), 0, self.options.window_units, 1, self.options.batch_size]
        if position is not None and position.epoch == epoch and position.segments:
            values[1] = len(position.segments)
            values[2] = position.window_units  # the order the interrupted epoch was planned with
            values[3], values[4] = position.world_size, position.batch_size
            for segment in position.segments:
                values += [int(segment["workers"]), segment_world(segment, position.world_size),
                           *[int(c) for c in segment["consumed"]]]
        if len(values) > _CONTROL_SIZE:
            raise ValueError("resume position too long")
        self.control.zero_()
        self.control[: len(values)] = torch.tensor(values, dtype=torch.int64)

    def _read_control(self) -> tuple[int, Position | None]:
        values = self.control.tolist()
        epoch, count = int(values[0]), int(values[1])
        if not count:
            return epoch, None
        segments, at = [], 5
        for _ in range(count):
            workers, world = int(values[at]), int(values[at + 1])
            segments.append({"workers": workers, "world_size": world,
                             "consumed": [int(c) for c in values[at + 2: at + 2 + workers]]})
            at += 2 + workers
        return epoch, Position(epoch, int(values[4]), int(values[3]), segments, int(values[2]))

    def streams(self, epoch: int, workers: int, position: Position | None = None) -> list[np.ndarray]:
        """Every worker's frame indices for this epoch (after `position`)."""
        o = self.options
        window = position.window_units if position is not None else o.window_units

        def frames_of(rank: int, world_size: int) -> np.ndarray:
            return rank_frames(self.units, seed=o.seed, epoch=epoch, rank=rank, world_size=world_size,
                               shuffle=o.shuffle, window_units=window, pins=self.pins)

        if position is not None and position.segments and not position.same_world(o.world_size):
            return continued_streams(frames_of, position, o.rank, o.world_size, o.batch_size, workers)
        return worker_streams(frames_of(o.rank, o.world_size), o.batch_size, workers, position)

    # ------------------------------------------------------------------ warm
    def fill(self, on_unit: Callable[[int, int, bool], None], threads: int = READ_AHEAD + 1) -> None:
        """Read every unit once into the local store, as an epoch's first reads would: `warm` before training.

        `on_unit(frames, unreadable, hit)` after each unit. Only for a split whose units all stay on disk.
        """
        reader = _WorkerReader(self, np.arange(len(self.keys)), 0)
        loose_pool = ThreadPoolExecutor(max_workers=LOOSE_IN_FLIGHT, thread_name_prefix="pokevq-frame")
        try:
            with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-unit") as pool:
                units = reader.unit_order.tolist()
                for unit, loaded in zip(units, pool.map(lambda u: reader._load(u, loose_pool), units)):
                    bad = sum(isinstance(v, FrameUnreadable) for v in loaded.values())
                    on_unit(len(reader.mine_in_unit[unit]), bad, loaded["_status"] == "hit")
                    _release(loaded)
        finally:
            loose_pool.shutdown(wait=True, cancel_futures=True)

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, position = self._read_control()
        mine = self.streams(epoch, workers, position)[worker]
        return _WorkerReader(self, mine, worker, self.owners(epoch, position)).batches()

    def owners(self, epoch: int, position: Position | None = None) -> np.ndarray | None:
        """The rank that reads each shard whole this epoch (another rank reads its few frames of it from their own
        objects); None: every rank reads its shards whole (one process, or an epoch resumed in another number)."""
        o = self.options
        if o.world_size <= 1 or (position is not None and position.segments
                                 and not position.same_world(o.world_size)):
            return None
        return unit_owners(self.units, seed=o.seed, epoch=epoch, world_size=o.world_size, shuffle=o.shuffle,
                           pins=self.pins)


class _WorkerReader:
    """One worker's pass: units fetched ahead in first-use order, released once their frames are used."""

    def __init__(self, dataset: StreamingFrames, frames: np.ndarray, worker: int,
                 owners: np.ndarray | None = None) -> None:
        self.d = dataset
        self.frames = frames
        self.worker = worker
        self.owners = owners
        units = dataset.unit_of[frames] if len(frames) else np.zeros(0, dtype=np.int32)
        unique, first = np.unique(units, return_index=True)
        self.unit_order = unique[np.argsort(first)]
        rank_of_unit = np.zeros(len(dataset.units), dtype=np.int64)
        rank_of_unit[self.unit_order] = np.arange(len(self.unit_order))
        self.frame_rank = rank_of_unit[units]
        counts = np.bincount(np.searchsorted(unique, units), minlength=len(unique))
        self.left = dict(zip(unique.tolist(), counts.tolist()))
        self.mine_in_unit: dict[int, list[int]] = {}
        for index, unit in zip(frames.tolist(), units.tolist()):
            self.mine_in_unit.setdefault(unit, []).append(index)

    def batches(self) -> Iterator[Batch]:
        bs = self.d.options.batch_size
        pending: dict[int, Future] = {}
        loaded: dict[int, dict[int, Any]] = {}
        submitted = 0
        pool = ThreadPoolExecutor(max_workers=max(2, self.d.options.read_ahead + 1), thread_name_prefix="pokevq-unit")
        loose_pool = ThreadPoolExecutor(max_workers=LOOSE_IN_FLIGHT, thread_name_prefix="pokevq-frame")
        try:
            for number, start in enumerate(range(0, len(self.frames), bs)):
                indices = self.frames[start:start + bs]
                need = int(self.frame_rank[start:start + bs].max()) + 1
                while submitted < min(len(self.unit_order), need + self.d.options.read_ahead):
                    unit = int(self.unit_order[submitted])
                    pending[unit] = pool.submit(self._load, unit, loose_pool)
                    submitted += 1
                for unit in set(self.d.unit_of[indices].tolist()):
                    if unit not in loaded:
                        loaded[unit] = pending.pop(unit).result()
                yield self._batch(indices, loaded, number)
                for unit in self.d.unit_of[indices].tolist():
                    self.left[unit] -= 1
                    if self.left[unit] == 0:
                        _release(loaded.pop(unit))
        finally:
            for future in pending.values():
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            loose_pool.shutdown(wait=True, cancel_futures=True)
            for future in pending.values():
                if future.done() and not future.cancelled() and future.exception() is None:
                    _release(future.result())
            for frames in loaded.values():
                _release(frames)

    # -------------------------------------------------------------- loading
    def _load(self, unit: int, loose_pool: ThreadPoolExecutor) -> dict[int, Any]:
        """{frame index: bytes, or an exception for a frame that cannot be read}; `_shard` holds an open shard."""
        mine = self.mine_in_unit[unit]
        shard = int(self.d.units.shard[unit])
        # A shard another rank reads whole this epoch: this rank's few frames of it come from their own objects.
        if shard >= 0 and (self.owners is None or int(self.owners[unit]) == self.d.options.rank):
            name, size = self.d.shard_names[shard], int(self.d.shard_sizes[shard])
            try:
                opened = self.d.cache.open(self.d.storage.namespace, name, size,
                                           lambda a, b: self.d.storage.get_range(name, a, b))
            except FATAL_STORAGE_ERRORS:
                raise
            except (ObjectNotFoundError, StorageError) as exc:
                log.warning("Shard %s unreadable (%s); reading its %d frame(s) from their own objects",
                            self.d.storage.uri(name), exc, len(mine))
            else:  # frames are sliced out at batch time; the shard stays locked (not evictable) until released
                return {"_shard": opened, "_status": "miss" if opened.downloaded else "hit"}
        if shard >= 0 or not self.d.options.keep_loose:  # a shard's few frames of this rank, or units not kept
            return {**dict(zip(mine, loose_pool.map(self._get_frame, mine))), "_status": "miss"}
        return self._load_loose(unit, mine, loose_pool)

    def _load_loose(self, unit: int, mine: list[int], loose_pool: ThreadPoolExecutor) -> dict[Any, Any]:
        """Loose frames: from their chunk's decoded unit on local disk, else fetched.

        When units are kept, a miss fetches the whole chunk (a chunk's frames can be split between workers or
        ranks, differently each epoch) and keeps it as one unit, so every later reader of any of its frames hits.
        """
        bounds = self.d.units.bounds
        chunk = sorted(self.d.units.order[bounds[unit]:bounds[unit + 1]].tolist())
        name = local_units.unit_name([str(self.d.keys[i]) for i in chunk], [self.d.etags[i] for i in chunk])
        claim = None
        for _ in range(2):  # another worker building this unit: wait for it, then read it
            opened = self.d.cache.open_local(name)
            if opened is not None:
                try:
                    frames = local_units.split(opened.data, len(chunk))
                finally:
                    opened.close()
                if frames is not None:
                    found = dict(zip(chunk, frames))
                    return {**{i: found[i] for i in mine}, "_status": "hit"}
                self.d.cache.discard_local(name)  # damaged: written again below
            claim = self.d.cache.claim_local(name)
            if claim is not None:
                break
        kept = None
        try:
            results = list(loose_pool.map(self._get_frame, chunk))
            if claim is not None and not any(isinstance(r, FrameUnreadable) for r in results):
                results = list(loose_pool.map(local_units.to_record, results))
                kept = local_units.build(results)
        finally:
            if claim is not None:
                self.d.cache.add_local(name, kept, claim)  # gives the claim up, kept or not
        found = dict(zip(chunk, results))
        return {**{i: found[i] for i in mine}, "_status": "miss"}

    def _get_frame(self, index: int) -> Any:
        key = str(self.d.keys[index])
        try:
            return self.d.storage.get_bytes(key)
        except FATAL_STORAGE_ERRORS:
            raise
        except ObjectNotFoundError:
            return FrameUnreadable("object disappeared from storage")
        except StorageError as exc:
            return FrameUnreadable(f"unreadable: {exc}")

    # ------------------------------------------------------------- batches
    def _batch(self, indices: np.ndarray, loaded: dict[int, dict[Any, Any]], number: int) -> Batch:
        keys: list[str] = []
        skipped: list[tuple[str, str]] = []
        frames: list[Any] = []  # a DecodedFrame (a packed frame) or frame bytes (PNG, JPEG, ...)
        hit: list[bool] = []
        for index in indices.tolist():
            unit = loaded[int(self.d.unit_of[index])]
            shard = unit.get("_shard")
            data = (shard.view(int(self.d.offset[index]), int(self.d.length[index])) if shard is not None
                    else unit[index])
            key = str(self.d.keys[index])
            if isinstance(data, FrameUnreadable):
                skipped.append((key, data.reason))
                continue
            if record.is_record(data):
                try:
                    data = record.decode(data)
                except FrameDecodeError as exc:
                    skipped.append((key, str(exc)))
                    continue
            frames.append(data)
            keys.append(key)
            hit.append(unit["_status"] == "hit")
        batch = Batch(images=None, keys=keys, skipped=skipped, worker_batch=(self.worker, number))
        if keys and not self._palette_batch(batch, frames):
            hit = self._rgb_batch(batch, frames, hit)
        batch.hits = sum(hit)
        batch.misses = len(hit) - batch.hits
        return batch

    def _palette_batch(self, batch: Batch, frames: list[Any]) -> bool:
        """Packed palette frames of one size cross as their indices (still packed when they share a width) and
        palettes; False: not this batch."""
        first = frames[0]
        # Without an accelerator the model runs on these cores: the workers make its float RGB (`_rgb_batch`).
        if not self.d.options.expand_on_device or not isinstance(first, record.DecodedFrame) or first.packed is None:
            return False
        size = (first.height, first.width)
        if not device_resizable(size, self.d.image_size) or not all(
                isinstance(f, record.DecodedFrame) and f.packed is not None and (f.height, f.width) == size
                for f in frames):
            return False
        # Frames of one width of index cross packed (the device unpacks them); a mixed batch, a byte an index.
        bits = first.bits if all(f.bits == first.bits for f in frames) else 8
        rows = [f.packed if f.bits == bits else f.indices.ravel() for f in frames]
        indices = np.empty((len(frames), len(rows[0])), dtype=np.uint8)
        palettes = np.zeros((len(frames), max(len(f.palette) for f in frames), 3), dtype=np.uint8)
        for n, (row, frame) in enumerate(zip(rows, frames)):
            indices[n] = row
            palettes[n, : len(frame.palette)] = frame.palette
        batch.indices, batch.palettes = torch.from_numpy(indices), torch.from_numpy(palettes)
        batch.image_hw, batch.frame_hw, batch.bits = self.d.image_size, size, bits
        return True

    def _rgb_batch(self, batch: Batch, frames: list[Any], hit: list[bool]) -> list[bool]:
        """Frame files (and packed frames mixed with them) decoded and resized here; returns the kept frames' hits."""
        rows = np.empty((len(frames), *self.d.image_size, 3), dtype=np.uint8)
        kept: list[str] = []
        kept_hit: list[bool] = []
        for frame, key, was_hit in zip(frames, batch.keys, hit):
            try:
                rows[len(kept)] = (packed_rgb(frame, self.d.image_size) if isinstance(frame, record.DecodedFrame)
                                   else decode_frame_uint8(frame, self.d.image_size))
            except FrameDecodeError as exc:
                batch.skipped.append((key, str(exc)))
                continue
            kept.append(key)
            kept_hit.append(was_hit)
        batch.keys = kept
        batch.images = batch_tensor(rows[: len(kept)]) if kept else None
        return kept_hit


@dataclass
class FrameUnreadable:
    reason: str


def _release(frames: dict[Any, Any]) -> None:
    shard = frames.get("_shard")
    if shard is not None:
        shard.close()
    frames.clear()


class StreamingLoader(DataLoader):
    """A DataLoader over `StreamingFrames` that knows the epoch's length and where a resumed epoch starts."""

    dataset: StreamingFrames

    def set_epoch(self, epoch: int, position: dict[str, Any] | None = None) -> None:
        self.epoch_position = Position.from_dict(position) if position else None
        self.dataset.set_epoch(epoch, self.epoch_position)
        self._epoch = epoch
        self._length: int | None = None

    def __len__(self) -> int:
        position = getattr(self, "epoch_position", None)
        if position is None:
            return self.dataset.batches(max(1, self.num_workers))
        if getattr(self, "_length", None) is None:  # what is left of a resumed epoch, on this rank
            streams = self.dataset.streams(position.epoch, max(1, self.num_workers), position)
            self._length = sum(batches_per_worker(streams, self.dataset.options.batch_size))
        return int(self._length)

    def tracker(self, epoch: int) -> StreamingTracker:
        position = getattr(self, "epoch_position", None)
        return StreamingTracker(epoch, self.dataset.options, max(1, self.num_workers), position)


class StreamingTracker:
    """Counts the batches each worker delivered, to write a `Position` into a mid-epoch checkpoint."""

    def __init__(self, epoch: int, options: StreamOptions, workers: int, resumed: Position | None) -> None:
        self.epoch = epoch
        self.options = options
        self.window_units = resumed.window_units if resumed is not None else options.window_units
        self.world_size = resumed.world_size if resumed is not None else options.world_size
        self.batch_size = resumed.batch_size if resumed is not None else options.batch_size  # the epoch's first split
        self.segments = [dict(s, consumed=list(s["consumed"])) for s in (resumed.segments if resumed else [])]
        last = self.segments[-1] if self.segments else None
        if last is None or last["workers"] != workers or segment_world(last, self.world_size) != options.world_size:
            self.segments.append({"workers": workers, "world_size": options.world_size, "consumed": [0] * workers})

    def advance(self, batch: Batch) -> None:
        worker = batch.worker_batch[0] if batch.worker_batch is not None else 0
        self.segments[-1]["consumed"][worker] += 1

    def position(self) -> dict[str, Any]:
        return Position(self.epoch, self.batch_size, self.world_size,
                        [dict(s, consumed=list(s["consumed"])) for s in self.segments], self.window_units).to_dict()


def make_streaming_loader(dataset: StreamingFrames, *, num_workers: int, pin_memory: bool = False) -> StreamingLoader:
    """Batches come whole from the dataset; workers are spawned (safe next to the orchestrator) and kept."""
    options: dict[str, Any] = {}
    if num_workers > 0:
        options = dict(multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=2)
    return StreamingLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                           collate_fn=_identity, **options)


def _identity(batch: Batch) -> Batch:
    return batch


def shutdown_workers(loader: Any) -> None:
    """Stop a DataLoader's persistent worker processes now (they would otherwise linger until collected)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
