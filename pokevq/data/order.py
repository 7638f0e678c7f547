"""Which frames each rank and DataLoader worker reads in an epoch, in what order, and where a resume starts.

Frames are grouped into *units*, the things read in one go: a shard (every frame packed in
it) or a chunk of loose frames (fetched concurrently). An epoch's order is a pure function
of (seed, epoch, world size, workers):

1. the unit order is shuffled;
2. in several ranks, each shard goes whole to one rank (`unit_owners`: largest first, to the
   rank with the fewest frames so far; shards that hold frames of both splits are pinned to one
   rank, so its training and validation frames are read by the same machine), so no two ranks
   download the same shard. Training shares are then evened to equal frame counts (every rank
   runs the same number of batches): loose frames fill the ranks that are short, then the few
   frames a rank has beyond its share go to them, read from their own objects; the few left
   over (frames % ranks) are dropped. A bucket with no shards is dealt frame by frame from the
   one-process order (rank r takes every world-size-th frame), so the ranks' batches together
   are one process's batches; validation frames are cut into contiguous slices (episodes in order);
3. within a rank, a bounded shuffle mixes frames inside windows of `window_units` consecutive
   units, so a batch draws from several shards (several episodes) while only those shards are
   needed at once;
4. the rank's batches are dealt to DataLoader workers in contiguous blocks, so each worker
   reads its own shards; the DataLoader interleaves the workers' batches round-robin.

Only integer arrays are built (a few bytes per frame), so a million-frame epoch plans in well
under a second. A mid-epoch position is the number of batches each worker delivered
(`Position`): the frames not yet trained are then known exactly, whatever the new run's
worker count.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOOSE_CHUNK = 256  # loose frames fetched together (tens of requests in flight)
WINDOW_UNITS = 8  # units whose frames the bounded shuffle mixes (fewer when the cache cannot hold them)


@dataclass(frozen=True)
class Units:
    """Frames grouped by unit: `order[bounds[u]:bounds[u + 1]]` are unit u's frame indices."""

    order: np.ndarray  # int64 frame indices, unit after unit
    bounds: np.ndarray  # int64, len = units + 1
    shard: np.ndarray  # int32 per unit: shard id, or -1 for a chunk of loose frames

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def unit_of(self, frames: int) -> np.ndarray:
        """Unit id of every frame index (an int32 array of length `frames`)."""
        out = np.full(frames, -1, dtype=np.int32)
        sizes = np.diff(self.bounds)
        out[self.order] = np.repeat(np.arange(len(self), dtype=np.int32), sizes)
        return out


def group_units(shard_of_frame: np.ndarray, offset_of_frame: np.ndarray, loose_chunk: int = LOOSE_CHUNK) -> Units:
    """Units from each frame's shard id (-1: not packed) and offset in it; shard frames in file order."""
    shard_of_frame = np.asarray(shard_of_frame, dtype=np.int64)
    packed = np.flatnonzero(shard_of_frame >= 0)
    loose = np.flatnonzero(shard_of_frame < 0)
    by_place = packed[np.lexsort((np.asarray(offset_of_frame)[packed], shard_of_frame[packed]))]
    shard_ids = shard_of_frame[by_place]
    starts = np.flatnonzero(np.r_[True, shard_ids[1:] != shard_ids[:-1]]) if len(by_place) else np.zeros(0, np.int64)
    loose_starts = np.arange(0, len(loose), max(1, loose_chunk), dtype=np.int64) + len(by_place)
    bounds = np.concatenate([starts, loose_starts, [len(by_place) + len(loose)]]).astype(np.int64)
    shard = np.concatenate([shard_ids[starts], np.full(len(loose_starts), -1)]).astype(np.int32)
    return Units(order=np.concatenate([by_place, loose]).astype(np.int64), bounds=bounds, shard=shard)


@dataclass
class Position:
    """Where an interrupted epoch stopped: per segment of the run, the batches each worker delivered.

    A run resumed with another worker count adds a segment; the frames left are the same.
    """

    epoch: int
    batch_size: int
    world_size: int = 1
    # {"workers": W, "consumed": [c_0..c_W-1], "world_size": R (when not `world_size`)}: each rank took as many
    segments: list[dict[str, Any]] = field(default_factory=list)
    window_units: int = WINDOW_UNITS  # the epoch's shuffle window, kept so a resume plans the same order

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "streaming", "epoch": self.epoch, "batch_size": self.batch_size,
                "world_size": self.world_size, "window_units": self.window_units,
                "segments": [dict(s) for s in self.segments]}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Position:
        return cls(int(value["epoch"]), int(value["batch_size"]), int(value.get("world_size", 1)),
                   [{"workers": int(s["workers"]), "consumed": [int(c) for c in s["consumed"]],
                     **({"world_size": int(s["world_size"])} if "world_size" in s else {})}
                    for s in value.get("segments", [])], int(value.get("window_units", WINDOW_UNITS)))

    def same_world(self, world_size: int) -> bool:
        """Whether every segment ran in `world_size` processes (then each rank continues its own frames)."""
        return all(segment_world(s, self.world_size) == world_size for s in self.segments)

    @property
    def batches(self) -> int:
        return sum(sum(s["consumed"]) for s in self.segments)


def _deal(frames: np.ndarray, batch_size: int, workers: int) -> list[np.ndarray]:
    """Contiguous blocks of whole batches, one per worker (the last batch may be short)."""
    batches = -(-len(frames) // batch_size)
    cuts = [min(len(frames), (w * batches // workers) * batch_size) for w in range(workers + 1)]
    return [frames[cuts[w]:cuts[w + 1]] for w in range(workers)]


def share_slice(length: int, rank: int, world_size: int, even: bool = True) -> slice:
    """Rank `rank`'s contiguous share of `length` items.

    `even` (training): equal shares, the few left over dropped, so every rank runs as many
    steps; otherwise (evaluation) every item is in one share, the first shares one larger.
    """
    world_size = max(1, world_size)
    if even:
        per_rank = length // world_size
        return slice(rank * per_rank, (rank + 1) * per_rank)
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _unit_order(units: Units, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's unit order: shuffled per (seed, epoch) for training, file order for evaluation."""
    if shuffle and len(units):
        return np.random.default_rng([int(seed), int(epoch), 0x706B]).permutation(len(units))
    return np.arange(len(units), dtype=np.int64)


def _unit_frames(units: Units, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames of the `chosen` units, unit after unit, and each frame's unit; without a Python loop over units."""
    lengths = np.diff(units.bounds)[chosen]
    offsets = np.repeat(units.bounds[:-1][chosen] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return units.order[np.arange(int(lengths.sum()), dtype=np.int64) + offsets], np.repeat(chosen, lengths)


def unit_owners(units: Units, *, seed: int, epoch: int, world_size: int = 1, shuffle: bool = True,
                pins: np.ndarray | None = None) -> np.ndarray:
    """The rank that reads each shard whole in `epoch` (-1 for a chunk of loose frames, which ranks may split).

    A unit pinned to a rank (`pins` >= 0) goes to it; the others, largest first (ties in the
    epoch's unit order), each to the rank with the fewest frames so far.
    """
    sizes = np.diff(units.bounds)
    owner = np.full(len(units), -1, dtype=np.int64)
    packed = units.shard >= 0
    if world_size <= 1:
        owner[packed] = 0
        return owner
    if pins is not None:
        pinned = packed & (pins >= 0)
        owner[pinned] = pins[pinned]
    loads = np.bincount(owner[owner >= 0], weights=sizes[owner >= 0], minlength=world_size).astype(np.int64)
    order = _unit_order(units, seed, epoch, shuffle)
    free = order[packed[order] & (owner[order] < 0)]
    heap = [(int(load), rank) for rank, load in enumerate(loads)]
    heapq.heapify(heap)
    for unit in free[np.argsort(-sizes[free], kind="stable")].tolist():
        load, rank = heapq.heappop(heap)
        owner[unit] = rank
        heapq.heappush(heap, (load + int(sizes[unit]), rank))
    return owner


def _whole_shard_share(units: Units, order: np.ndarray, owner: np.ndarray, rank: int, world_size: int,
                       even: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rank `rank`'s frames (shards whole, see `unit_owners`) and each one's unit, in the epoch's unit order.

    `even` (training): every rank gets `frames // world_size`: loose frames fill the ranks that
    are short, in rank order, then the frames a rank has beyond that (the last of its order) go
    to those still short; evaluation: every frame once, loose frames cut into contiguous shares.
    """
    place = np.empty(len(units), dtype=np.int64)
    place[order] = np.arange(len(units), dtype=np.int64)
    owned = [_unit_frames(units, order[owner[order] == r]) for r in range(world_size)]
    loose, loose_units = _unit_frames(units, order[owner[order] < 0])
    if not even:
        cut = share_slice(len(loose), rank, world_size, even=False)
        parts = [owned[rank], (loose[cut], loose_units[cut])]
    else:
        share = len(units.order) // world_size
        loads = np.array([len(frames) for frames, _ in owned], dtype=np.int64)
        short = np.maximum(0, share - loads)
        from_loose = np.minimum(short, np.maximum(0, len(loose) - np.r_[0, np.cumsum(short)[:-1]]))
        start = int(from_loose[:rank].sum())
        parts = [(owned[rank][0][:share], owned[rank][1][:share])]
        parts.append((loose[start:start + from_loose[rank]], loose_units[start:start + from_loose[rank]]))
        extra = [(frames[share:], of[share:]) for frames, of in owned]  # beyond a rank's share, in rank order
        spare = np.concatenate([frames for frames, _ in extra])
        spare_units = np.concatenate([of for _, of in extra])
        still = short - from_loose
        start = int(still[:rank].sum())
        parts.append((spare[start:start + still[rank]], spare_units[start:start + still[rank]]))
    frames = np.concatenate([frames for frames, _ in parts])
    of = np.concatenate([of for _, of in parts])
    by_place = np.argsort(place[of], kind="stable")  # each unit's frames stay in file order
    return frames[by_place], of[by_place]


def rank_frames(
    units: Units, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
    window_units: int = WINDOW_UNITS, pins: np.ndarray | None = None,
) -> np.ndarray:
    """The frame indices one rank trains on in `epoch`, in order (before dealing to workers).

    `pins`: per unit, the rank it must go to (-1: any), see `unit_owners`.
    """
    sizes = np.diff(units.bounds)
    order = _unit_order(units, seed, epoch, shuffle)
    if world_size > 1 and bool((units.shard >= 0).any()):  # shards go whole to one rank each
        owner = unit_owners(units, seed=seed, epoch=epoch, world_size=world_size, shuffle=shuffle, pins=pins)
        mine, of = _whole_shard_share(units, order, owner, rank, world_size, even=shuffle)
        place = np.r_[0, np.cumsum(of[1:] != of[:-1])] if len(of) else of  # unit's place among this rank's
        return _window_shuffle(mine, place, [seed, epoch, rank], window_units) if shuffle else mine
    sequence, _ = _unit_frames(units, order)
    if not shuffle:  # evaluation: contiguous shares, episodes kept in order
        return sequence[share_slice(len(sequence), rank, world_size, even=False)]
    # No shards: the one-process order, dealt frame by frame (rank r takes every world_size-th frame, the few
    # left over dropped), so the ranks' batches together are exactly one process's batch, step by step.
    place = np.repeat(np.arange(len(order), dtype=np.int64), sizes[order])  # each frame's unit place
    sequence = _window_shuffle(sequence, place, [seed, epoch, 0], window_units)
    world_size = max(1, world_size)
    return sequence[: len(sequence) - len(sequence) % world_size][rank::world_size]


def _window_shuffle(frames: np.ndarray, place: np.ndarray, key: list[int], window_units: int) -> np.ndarray:
    """The bounded shuffle: frames mixed within windows of `window_units` consecutive unit places."""
    if len(frames) <= 1:
        return frames
    rng = np.random.default_rng([*(int(k) for k in key), 0x5348])
    keys = (place // max(1, int(window_units))).astype(np.float64) + rng.random(len(frames))
    return frames[np.argsort(keys, kind="stable")]


def segment_world(segment: dict[str, Any], default: int) -> int:
    return int(segment.get("world_size", default))


def continued_streams(
    frames_of: Any, position: Position, rank: int, world_size: int, batch_size: int, workers: int
) -> list[np.ndarray]:
    """This rank's worker streams after `position`, when the epoch ran in another number of processes before.

    `frames_of(rank, world)` plans a rank's frames. What every earlier rank left is pooled in
    rank order and shared out again (equal shares, as at the start of an epoch).
    """
    segments = position.segments
    total_batch = position.batch_size * position.world_size  # the global batch, split over each segment's ranks
    first = segment_world(segments[0], position.world_size)
    per_rank = [_deal(frames_of(r, first), total_batch // first, int(segments[0]["workers"])) for r in range(first)]
    for index, segment in enumerate(segments):
        taken = total_batch // len(per_rank)
        per_rank = [[s[int(c) * taken:] for s, c in zip(streams, segment["consumed"])] for streams in per_rank]
        if index + 1 < len(segments):
            world = segment_world(segments[index + 1], position.world_size)
            following = int(segments[index + 1]["workers"])
        else:
            world, following = world_size, workers
        size = batch_size if index + 1 == len(segments) else total_batch // world
        if world != len(per_rank):
            pool = np.concatenate([s for streams in per_rank for s in streams])
            per_rank = [_deal(pool[share_slice(len(pool), r, world)], size, following) for r in range(world)]
        elif following != len(per_rank[0]):
            per_rank = [_deal(np.concatenate(streams), size, following) for streams in per_rank]
    return per_rank[rank]


def worker_streams(
    frames: np.ndarray, batch_size: int, workers: int, position: Position | None = None
) -> list[np.ndarray]:
    """Each worker's frames for the rest of the epoch, after `position` when resuming."""
    workers = max(1, workers)
    segments = position.segments if position is not None else []
    if not segments:
        return _deal(frames, batch_size, workers)
    streams = _deal(frames, batch_size, int(segments[0]["workers"]))
    for index, segment in enumerate(segments):
        if len(segment["consumed"]) != len(streams):
            raise ValueError(f"position segment {index} names {len(segment['consumed'])} workers, not {len(streams)}")
        streams = [stream[int(c) * batch_size:] for stream, c in zip(streams, segment["consumed"])]
        following = int(segments[index + 1]["workers"]) if index + 1 < len(segments) else workers
        if following != len(streams):
            streams = _deal(np.concatenate(streams) if streams else frames[:0], batch_size, following)
    return streams


def batches_per_worker(streams: list[np.ndarray], batch_size: int) -> list[int]:
    return [-(-len(s) // batch_size) for s in streams]
