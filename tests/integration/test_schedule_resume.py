"""The learning-rate schedule reaches the optimizer and a resumed run continues on the same curve."""

from __future__ import annotations

import pytest

from tests.helpers.runs import TINY


def _trainer(frames, tmp_path, name, resume_state=None):
    from pokevq.config import TrainConfig
    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage
    from pokevq.train.trainer import Trainer

    storage = LocalStorage(str(frames))
    manifest = index_frames(storage, "", val_fraction=0.25, seed=0)
    config = TrainConfig(experiment_name=name, num_epochs=3, batch_size=4, learning_rate=1e-3, lr_schedule="cosine",
                         warmup_steps=3, num_workers=0, device="cpu", seed=0, **TINY)
    source = FrameSource(storage, FrameCache(tmp_path / name / "cache", max_items=len(manifest) + 1))
    return Trainer(config, manifest, source, tmp_path / name, resume_state=resume_state)


def test_cosine_with_warm_up_reaches_the_optimizer_and_survives_resume(synth_frames, tmp_path):
    from pokevq.train.checkpoint import load_checkpoint
    from pokevq.train.schedule import learning_rate_at

    straight = _trainer(synth_frames, tmp_path, "straight")
    rates = []
    try:
        for epoch in (1, 2, 3):
            result = straight.train_epoch(epoch)
            rates.append(straight.optimizer.param_groups[0]["lr"])
    finally:
        straight.close()
    total = result.global_step
    expected = [learning_rate_at(step - 1, peak=1e-3, schedule="cosine", warmup_steps=3, total_steps=total)
                for step in (total // 3, 2 * total // 3, total)]
    assert rates == pytest.approx(expected)
    assert rates[0] > rates[1] > rates[2] and rates[2] < 1.2e-4  # near a tenth of the peak by the last step

    state = load_checkpoint(tmp_path / "straight" / "checkpoints" / "checkpoint_epoch_1.pt")
    resumed = _trainer(synth_frames, tmp_path, "resumed", resume_state=state)
    try:
        resumed_rates = [None]
        for epoch in (2, 3):
            resumed.train_epoch(epoch)
            resumed_rates.append(resumed.optimizer.param_groups[0]["lr"])
    finally:
        resumed.close()
    assert resumed_rates[1:] == pytest.approx(rates[1:])
