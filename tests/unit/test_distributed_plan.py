"""How an epoch is shared between training processes, and how it continues in another number of them."""

from __future__ import annotations

import numpy as np
import pytest

from pokevq.config import TrainConfig
from pokevq.data.order import (
    Position,
    continued_streams,
    group_units,
    rank_frames,
    unit_owners,
    worker_streams,
)
from pokevq.dist.launch import WorldPlan
from pokevq.errors import ConfigError


def _loose(frames: int):
    return group_units(np.full(frames, -1, dtype=np.int32), np.zeros(frames, dtype=np.int64))


def test_global_batches_of_an_unpacked_bucket_are_those_of_one_process():
    units = _loose(70)
    alone = rank_frames(units, seed=5, epoch=3, rank=0, world_size=1)
    shares = [rank_frames(units, seed=5, epoch=3, rank=rank, world_size=2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 35  # as many steps on every rank
    for step in range(9):  # step k's global batch (8 frames, 4 a rank): frames 8k..8k+8 of one process's order
        together = np.concatenate([share[4 * step:4 * step + 4] for share in shares])
        assert sorted(together.tolist()) == sorted(alone[8 * step:8 * step + 8].tolist())


def test_an_unpacked_epoch_continues_in_another_number_of_processes():
    units = _loose(64)

    def frames_of(rank, world):
        return rank_frames(units, seed=1, epoch=2, rank=rank, world_size=world)

    # 2 ranks of 1 worker, 4 frames each per step: each delivered 3 batches; the epoch continues in 1 process.
    position = Position(epoch=2, batch_size=4, world_size=2, segments=[{"workers": 1, "consumed": [3]}])
    taken = [frames_of(rank, 2)[:12] for rank in range(2)]
    left = np.concatenate(continued_streams(frames_of, position, 0, 1, 8, 1))
    assert sorted(np.concatenate([*taken, left]).tolist()) == list(range(64))  # every frame once


def test_validation_shares_keep_episode_order_and_every_frame():
    units = _loose(11)
    shares = [rank_frames(units, seed=0, epoch=1, rank=rank, world_size=3, shuffle=False) for rank in range(3)]
    assert np.concatenate(shares).tolist() == list(range(11))


def test_a_streaming_epoch_continues_in_another_number_of_processes():
    shard_of = np.repeat(np.arange(12), 20)  # 12 shards of 20 frames
    offset = np.tile(np.arange(20), 12)
    units = group_units(shard_of, offset)

    def frames_of(rank, world):
        return rank_frames(units, seed=3, epoch=2, rank=rank, world_size=world)

    # 2 ranks of 2 workers, 6 frames each per step (global batch 12): each worker delivered 2 batches ...
    position = Position(epoch=2, batch_size=6, world_size=2, segments=[{"workers": 2, "consumed": [2, 2]}])
    done = [stream[:12] for rank in range(2) for stream in worker_streams(frames_of(rank, 2), 6, 2)]
    # ... and the rest of the epoch runs in 3 ranks of 1 worker, 4 frames each per step.
    rest = [continued_streams(frames_of, position, rank, 3, 4, 1) for rank in range(3)]
    assert len({len(r[0]) for r in rest}) == 1  # every rank as many frames: as many steps
    seen = np.concatenate([*done, *[r[0] for r in rest]])
    assert len(seen) == len(set(seen.tolist()))  # nothing twice
    assert len(seen) >= 240 - 3  # nothing lost but the few an equal split drops


def test_each_shard_is_read_by_one_rank_and_the_shares_stay_equal():
    """13 shards of 5 to 9 frames and 10 loose frames over 2 and 3 ranks; shard 3 also holds validation frames."""
    sizes = [5, 9, 7, 6, 8, 9, 5, 7, 6, 8, 7, 9, 6]
    shard_of = np.r_[np.repeat(np.arange(13), sizes), np.full(10, -1)].astype(np.int32)
    units = group_units(shard_of, np.arange(len(shard_of)))
    unit_of = units.unit_of(len(shard_of))
    val_units = group_units(np.array([3, 3, 11], dtype=np.int32), np.arange(3))
    for world in (2, 3):
        pins = np.where(units.shard == 3, 1, -1)
        for epoch in (1, 2):
            owner = unit_owners(units, seed=0, epoch=epoch, world_size=world, pins=pins)
            shares = [rank_frames(units, seed=0, epoch=epoch, rank=r, world_size=world, pins=pins)
                      for r in range(world)]
            assert {len(s) for s in shares} == {len(shard_of) // world}  # as many steps on every rank
            seen = np.concatenate(shares)
            assert len(set(seen.tolist())) == len(seen) == len(shard_of) - len(shard_of) % world
            # A rank reads whole only the shards it owns; of the others it reads a few frames from their objects.
            borrowed = [int(((owner[unit_of[s]] != r) & (owner[unit_of[s]] >= 0)).sum()) for r, s in enumerate(shares)]
            assert sum(borrowed) <= max(sizes), borrowed
            assert owner[units.shard == 3].tolist() == [1]
        # Validation frames of shard 3 go to the rank that trains it; every validation frame once.
        val_pins = np.where(val_units.shard == 3, 1, -1)
        val = [rank_frames(val_units, seed=0, epoch=1, rank=r, world_size=world, shuffle=False, pins=val_pins)
               for r in range(world)]
        assert val[1][:2].tolist() == [0, 1] and sorted(np.concatenate(val).tolist()) == [0, 1, 2]

    def frames_of(rank, world):
        return rank_frames(units, seed=0, epoch=4, rank=rank, world_size=world)

    # A mid-epoch position of 2 processes finishes in 1, and one of 1 finishes in 2: every frame once.
    for before, after in ((2, 1), (1, 2)):
        position = Position(epoch=4, batch_size=4 // before, world_size=before, segments=[{"workers": 1,
                                                                                          "consumed": [3] * before}])
        done = [worker_streams(frames_of(r, before), 4 // before, 1)[0][:3 * 4 // before] for r in range(before)]
        rest = [continued_streams(frames_of, position, r, after, 4 // after, 1)[0] for r in range(after)]
        assert len({len(r) for r in rest}) == 1
        seen = np.concatenate([*done, *rest])
        assert len(seen) == len(set(seen.tolist())) >= len(shard_of) - 1


def test_batch_size_must_divide_over_the_processes():
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size\) 10 does not divide evenly over 4"):
        WorldPlan.from_config(TrainConfig(batch_size=10, nproc_per_node=4, device="cpu"))
    plan = WorldPlan.from_config(TrainConfig(batch_size=8, nproc_per_node=4, device="cpu"))
    assert (plan.world_size, plan.backend) == (4, "gloo") and plan.endpoint.startswith("127.0.0.1:")
    assert WorldPlan.from_config(TrainConfig(nproc_per_node="auto", device="cpu")).world_size == 1


@pytest.mark.parametrize("values, flag", [
    (dict(nproc_per_node=0), "--nproc-per-node"),
    (dict(nproc_per_node="many"), "--nproc-per-node"),
    (dict(nnodes=2), "--rdzv-endpoint"),
    (dict(nnodes=2, node_rank=2, rdzv_endpoint="10.0.0.1:29500"), "--node-rank"),
    (dict(rdzv_endpoint="10.0.0.1"), "--rdzv-endpoint"),
])
def test_distributed_options_are_checked(values, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**values)
