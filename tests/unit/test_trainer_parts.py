"""The trainer's parts, each built alone: no flow, no S3, no second process."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from pokevq.config import TrainConfig
from pokevq.data.batch import Batch
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.train.baselines import fit_baselines
from pokevq.train.checkpoint import Checkpoint
from pokevq.train.epoch_stats import EpochStats, FrameCounts
from pokevq.train.evaluator import Evaluator
from pokevq.train.metrics import EpochMetrics
from pokevq.train.sink import RankZeroSink
from pokevq.train.state import TrainState
from pokevq.train.step import TrainStep

pytestmark = pytest.mark.usefixtures("one_thread_seeded")

CPU = torch.device("cpu")


def tiny(**overrides) -> tuple[TrainConfig, VQVAE]:
    config = TrainConfig.from_dict({"image_size": "16x24", "architecture": "tile", "hidden_channels": 8,
                                    "embedding_dim": 8, "codebook_size": 32, "downsample": 8,
                                    "device": "cpu", "learning_rate": 1e-2, "warmup_steps": 4, **overrides})
    return config, VQVAE(ModelConfig.for_run(config))


def frames(n: int, seed: int = 0) -> torch.Tensor:
    """Game Boy-like frames: 4 shades in 8x8 tiles."""
    g = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, 4, (n, 1, 2, 3), generator=g).float() / 3
    return tiles.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(n, 3, 16, 24).contiguous()


def test_a_step_follows_the_schedule_and_moves_the_weights():
    config, model = tiny()
    step = TrainStep(model, config, CPU)
    before = [p.detach().clone() for p in model.parameters()]
    out = step(frames(4), 0, steps_per_epoch=10)
    assert step.learning_rate == pytest.approx(1e-2 / 4)  # the first of 4 warm-up steps
    assert torch.isfinite(out.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    step(frames(4, seed=1), 3, steps_per_epoch=10)
    assert step.learning_rate == pytest.approx(1e-2)  # warm-up done: the peak


def test_loading_a_checkpoint_keeps_the_configured_learning_rate():
    config, model = tiny()
    step = TrainStep(model, config, CPU)
    step(frames(4), 0, steps_per_epoch=10)
    saved = TrainState(epoch=1, global_step=1).checkpoint(model, step.optimizer, config={},
                                                          model_config=model.config.to_dict())
    other_config, other = tiny(learning_rate=5e-3)
    other_step = TrainStep(other, other_config, CPU)
    other_step.load(saved, "saved")
    assert other_step.learning_rate == 5e-3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_state_keeps_the_best_epoch_and_survives_a_checkpoint(tmp_path):
    config, model = tiny()
    step = TrainStep(model, config, CPU)
    state = TrainState()
    assert state.finish(1, 0.5, {"epoch": 1, "baselines": {"exact dictionary": {"psnr": 30.0}}})
    assert not state.finish(2, 0.7, {"epoch": 2})  # worse: epoch 1 stays the best
    assert state.skip("a.png", "truncated") and not state.skip("a.png", "again")
    state.global_step = 20
    position = {"kind": "streaming", "epoch": 3, "segments": []}
    state.checkpoint(model, step.optimizer, config={}, model_config=model.config.to_dict(),
                     position=position, run_id="run-1").save(tmp_path / "c.pt")
    back = TrainState.resumed(Checkpoint.load(tmp_path / "c.pt"), "c.pt")
    assert (back.epoch, back.global_step, back.best, back.skipped) == (2, 20, {"epoch": 1, "loss": 0.5},
                                                                       {"a.png": "truncated"})
    assert back.position_in(3) == position and back.position_in(4) is None
    assert back.baselines == {"exact dictionary": {"psnr": 30.0}}


def test_a_position_from_the_old_cached_path_restarts_its_epoch(caplog):
    config, model = tiny()
    old = TrainState(epoch=2).checkpoint(model, TrainStep(model, config, CPU).optimizer, config={},
                                         model_config=model.config.to_dict(), position={"kind": "cached", "epoch": 3})
    with caplog.at_level(logging.WARNING):
        assert TrainState.resumed(old, "old.pt").position is None
    assert "epoch 3 starts again from its first batch" in caplog.text


def test_counts_log_each_skipped_frame_once_and_merge_to_themselves_alone(caplog):
    state = TrainState()
    stats = EpochStats(EpochMetrics(32), frames=64, seconds=2.0, wait=0.5, loop=2.5)
    with caplog.at_level(logging.WARNING):
        stats.counts.account(Batch(None, [], skipped=[("bad.png", "truncated")], hits=3, misses=1), state)
        stats.counts.account(Batch(None, [], skipped=[("bad.png", "truncated")], hits=4), state)
    assert caplog.text.count("Skipped frame bad.png") == 1
    merged = stats.merged(state)  # one process: the epoch is this rank's
    assert (merged.frames, merged.counts.hits, merged.counts.misses) == (64, 7, 1)
    assert merged.counts.skipped_new == [("bad.png", "truncated")]
    assert merged.frames_per_second == 32.0 and merged.stall == pytest.approx(0.2)
    assert merged.counts.hit_rate == pytest.approx(7 / 8)


def test_evaluator_scores_the_model_and_fits_the_baselines_once():
    config, model = tiny()
    images = frames(12)
    keys = [f"g/e/{i}.png" for i in range(12)]
    loader = [Batch(images[:6], keys[:6]), Batch(images[6:], keys[6:], skipped=[("g/e/x.png", "no such key")])]
    rows = pd.DataFrame({"key": keys, "game": "g", "episode": "e"})
    fitted = []

    def fit():
        fitted.append(1)
        return fit_baselines([images], codebook_size=32, tile=8)

    evaluator = Evaluator(model, loader, TrainStep(model, config, CPU).autocast, CPU, fit, rows, config.model.image_hw)
    state, counts = TrainState(), FrameCounts()
    val = evaluator(counts, state)
    assert 0 < val["psnr"] < 100 and val["loss"] > 0
    assert evaluator.baselines["exact dictionary"]["psnr"] > val["psnr"]  # an untrained model loses to the tiles
    assert evaluator.model_on_baseline_frames["psnr"] == pytest.approx(val["psnr"])  # the same 12 frames
    assert counts.skipped_new == [("g/e/x.png", "no such key")] and state.skipped == {"g/e/x.png": "no such key"}
    evaluator(FrameCounts(), state)
    assert len(fitted) == 1  # once per experiment


def test_only_rank_zero_writes(tmp_path):
    config, model = tiny()
    def build():
        return TrainState().checkpoint(model, TrainStep(model, config, CPU).optimizer, config={},
                                       model_config=model.config.to_dict())

    silent = RankZeroSink(tmp_path / "other", writes=False)
    silent.scalars("train", {"loss": 1.0}, 1)
    assert silent.save(tmp_path / "other" / "c.pt", build) == ""
    silent.close()
    assert not (tmp_path / "other").exists()
    sink = RankZeroSink(tmp_path / "zero")  # one process: rank 0
    sink.scalars("train", {"loss": 1.0}, 1)
    digest = sink.save(tmp_path / "zero" / "c.pt", build)
    sink.close()
    assert len(digest) == 64 and (tmp_path / "zero" / "c.pt").exists()
    assert any((tmp_path / "zero" / "tensorboard").iterdir())
