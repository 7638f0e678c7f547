"""Checkpoints: safe loading, clear refusals, and publishing latest/best to S3 (moto)."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from pokevq.errors import CheckpointError
from pokevq.layout import Layout
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.storage import S3Storage
from pokevq.train.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    build_checkpoint,
    check_model_shape,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    sha256_file,
)
from pokevq.train.publish import StepCheckpointPublisher, TensorBoardSync, publish_checkpoint, upload_log

MODEL_CONFIG = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16)


def trained_model(seed: int = 0) -> tuple[VQVAE, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = VQVAE(MODEL_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 40)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    return model, optimizer


def checkpoint_of(model, optimizer, epoch: int = 3) -> Checkpoint:
    return build_checkpoint(
        model,
        optimizer,
        epoch=epoch,
        global_step=epoch * 10,
        config={"experiment_name": "exp1", "batch_size": 2, "learning_rate": 1e-3},
        model_config=MODEL_CONFIG.to_dict(),
        metrics={"val_loss": 0.5, "psnr": 21.0},
        history=[{"epoch": 1, "train_loss": 0.9}],
        best={"epoch": 2, "val_loss": 0.4},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, optimizer = trained_model()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_epoch_3.pt"
    sha = save_checkpoint(checkpoint_of(model, optimizer), path)
    return model, optimizer, path, sha


# --- round trip ------------------------------------------------------------------------


def test_save_returns_sha256_of_the_file(saved):
    _, _, path, sha = saved
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha == sha256_file(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_round_trip_restores_identical_outputs(saved):
    model, optimizer, path, _ = saved
    state = load_checkpoint(path)
    assert state["format_version"] == FORMAT_VERSION
    assert state["epoch"] == 3
    assert state["global_step"] == 30
    assert state["metrics"] == {"val_loss": 0.5, "psnr": 21.0}
    assert state["best"] == {"epoch": 2, "val_loss": 0.4}
    assert state["history"] == [{"epoch": 1, "train_loss": 0.9}]
    assert ModelConfig.from_dict(state["model_config"]) == MODEL_CONFIG

    torch.manual_seed(99)  # a different init: only the checkpoint can make the outputs match
    restored = VQVAE(ModelConfig.from_dict(state["model_config"]))
    restored.load_state_dict(state["model"])
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    restored_optimizer.load_state_dict(state["optimizer"])

    x = torch.rand(3, 3, 32, 40)
    model.eval()
    restored.eval()
    with torch.no_grad():
        expected, got = model(x), restored(x)
    assert torch.equal(expected.recon, got.recon)
    assert torch.equal(expected.codes, got.codes)
    restored_state = restored_optimizer.state_dict()["state"].values()
    for group_a, group_b in zip(optimizer.state_dict()["state"].values(), restored_state):
        assert torch.equal(group_a["exp_avg"], group_b["exp_avg"])
        assert torch.equal(group_a["exp_avg_sq"], group_b["exp_avg_sq"])


def test_load_from_bytes(saved):
    _, _, path, _ = saved
    state = load_checkpoint(path.read_bytes(), name="s3://b/checkpoints/exp1/checkpoint_latest.pt")
    assert state["epoch"] == 3


def test_checkpoint_loads_with_weights_only(saved):
    """Plain torch.load(weights_only=True) accepts the file: nothing in it needs unpickling code."""
    _, _, path, _ = saved
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["config"]["experiment_name"] == "exp1"


def test_rng_state_restores(saved):
    _, _, path, _ = saved
    state = rng_state()
    first = (torch.rand(3), random.random())
    restore_rng(state)
    assert torch.equal(torch.rand(3), first[0])
    assert random.random() == first[1]
    restore_rng(load_checkpoint(path)["rng"])  # a loaded checkpoint's RNG state is usable too


# --- refusals ---------------------------------------------------------------------------


def test_random_bytes_refused(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="not a valid pokevq checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a valid pokevq checkpoint"):
        load_checkpoint(b"")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_missing_keys_are_named(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({"format_version": 1, "model": {}, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    for key in ("optimizer", "global_step", "config", "model_config", "metrics"):
        assert key in message
    assert "missing" in message


def test_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="missing format_version"):
        load_checkpoint(path)


def test_newer_format_is_refused(tmp_path, saved):
    model, optimizer, _, _ = saved
    state = checkpoint_of(model, optimizer).to_state()
    state["format_version"] = 99
    path = tmp_path / "future.pt"
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="newer") as info:
        load_checkpoint(path)
    assert "99" in str(info.value)


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    # The payload is real: unsafe unpickling does create its marker.
    proof = tmp_path / "PROOF"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()

    marker = tmp_path / "MARKER"
    state = {
        "format_version": 1,
        "model": {},
        "optimizer": {},
        "epoch": 1,
        "global_step": 1,
        "config": {},
        "model_config": {},
        "metrics": {"evil": _Payload(marker)},
    }
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path.read_bytes())
    assert not marker.exists()


def test_model_shape_mismatch_names_field(saved):
    _, _, path, _ = saved
    state = load_checkpoint(path)
    other = ModelConfig(image_size=(32, 40), hidden_channels=16, embedding_dim=4, codebook_size=16)
    with pytest.raises(CheckpointError, match="hidden_channels") as info:
        check_model_shape(state, other.to_dict(), "ckpt")
    assert "codebook_size" not in str(info.value)
    check_model_shape(state, MODEL_CONFIG.to_dict(), "ckpt")  # the same shape passes


def test_model_shape_mismatch_names_every_field(saved):
    _, _, path, _ = saved
    other = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=8, codebook_size=32)
    with pytest.raises(CheckpointError) as info:
        check_model_shape(load_checkpoint(path), other.to_dict(), "ckpt")
    assert "embedding_dim" in str(info.value)
    assert "codebook_size" in str(info.value)


# --- publishing to S3 ---------------------------------------------------------------


@pytest.fixture
def s3(bucket, moto_endpoint):
    return S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)


def test_publish_latest_and_best(s3, s3_client, bucket, tmp_path, saved):
    model, optimizer, _, _ = saved
    layout = Layout(experiment="exp1")
    first = tmp_path / "e1.pt"
    sha1 = save_checkpoint(checkpoint_of(model, optimizer, epoch=1), first)
    uris = publish_checkpoint(s3, layout, first, epoch=1, sha256=sha1, is_best=True)
    assert uris == {
        "checkpoint": f"s3://{bucket}/checkpoints/exp1/checkpoint_epoch_1.pt",
        "latest": f"s3://{bucket}/checkpoints/exp1/checkpoint_latest.pt",
        "best": f"s3://{bucket}/checkpoints/exp1/checkpoint_best.pt",
    }
    epoch1 = first.read_bytes()
    for key in ("checkpoints/exp1/checkpoint_epoch_1.pt", "checkpoints/exp1/checkpoint_latest.pt",
                "checkpoints/exp1/checkpoint_best.pt"):
        assert s3.get_bytes(key) == epoch1

    second = tmp_path / "e2.pt"
    sha2 = save_checkpoint(checkpoint_of(model, optimizer, epoch=2), second)
    assert sha2 != sha1
    uris = publish_checkpoint(s3, layout, second, epoch=2, sha256=sha2, is_best=False)
    assert "best" not in uris
    assert s3.get_bytes("checkpoints/exp1/checkpoint_epoch_2.pt") == second.read_bytes()
    assert s3.get_bytes("checkpoints/exp1/checkpoint_latest.pt") == second.read_bytes()
    assert s3.get_bytes("checkpoints/exp1/checkpoint_best.pt") == epoch1
    assert s3.get_bytes("checkpoints/exp1/checkpoint_epoch_1.pt") == epoch1

    def metadata(key: str) -> dict:
        return s3_client.head_object(Bucket=bucket, Key=key)["Metadata"]

    assert metadata("checkpoints/exp1/checkpoint_epoch_1.pt") == {"sha256": sha1}
    assert metadata("checkpoints/exp1/checkpoint_epoch_2.pt") == {"sha256": sha2}
    # What was published loads back as the checkpoint it was.
    assert load_checkpoint(s3.get_bytes("checkpoints/exp1/checkpoint_latest.pt"))["epoch"] == 2
    assert load_checkpoint(s3.get_bytes("checkpoints/exp1/checkpoint_best.pt"))["epoch"] == 1


def test_a_step_checkpoint_replaces_the_previous_only_once_verified_and_latest_only_moves_forward(
    fault_proxy, s3_client, bucket, tmp_path, saved
):
    model, optimizer, _, _ = saved
    storage = S3Storage(bucket, "us-east-1", endpoint_url=fault_proxy.url)
    layout = Layout(experiment="steps")
    prefix = "checkpoints/steps/"

    def written(step: int, epoch: int = 0) -> tuple:
        """A checkpoint of `step` as the trainer writes it: (path, sha256)."""
        state = checkpoint_of(model, optimizer, epoch=epoch)
        state.global_step = step
        path = tmp_path / f"{epoch}-{step}.pt"
        return path, save_checkpoint(state, path)

    def objects() -> list[str]:
        return sorted(item["Key"][len(prefix):]
                      for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    def latest_step() -> int:
        body = s3_client.get_object(Bucket=bucket, Key=prefix + "checkpoint_latest.pt")["Body"].read()
        return load_checkpoint(body)["global_step"]

    publisher = StepCheckpointPublisher(storage, layout)
    try:
        publisher(*written(2), 2).result()
        publisher(*written(4), 4).result()
        assert objects() == ["checkpoint_latest.pt", "checkpoint_step_4.pt"]  # step 2 gone once 4 was verified
        assert latest_step() == 4
        # Step 6's upload is cut in half on its way: it never verifies, so step 4 stays, and latest with it.
        fault_proxy.add_fault("truncate", rf"^PUT /{bucket}/{prefix}checkpoint_step_6\.pt", times=1)
        publisher(*written(6), 6).result()
        assert fault_proxy.injected_count("truncate") == 1
        assert objects() == ["checkpoint_latest.pt", "checkpoint_step_4.pt"]
        assert latest_step() == 4
        # An epoch's checkpoint of an earlier step that lands late does not move latest back ...
        path, sha = written(3, epoch=1)
        publish_checkpoint(storage, layout, path, 1, sha, False, global_step=3)
        assert latest_step() == 4
        # ... and the next step checkpoint moves it on and replaces step 4.
        publisher(*written(8), 8).result()
        assert objects() == ["checkpoint_epoch_1.pt", "checkpoint_latest.pt", "checkpoint_step_8.pt"]
        assert latest_step() == 8
    finally:
        publisher.close()


# --- TensorBoard sync -------------------------------------------------------------------


def test_tensorboard_sync_uploads_only_changes(s3, tmp_path):
    local = tmp_path / "tb"
    (local / "train").mkdir(parents=True)
    (local / "events.out.tfevents.1").write_bytes(b"event-a")
    (local / "train" / "events.out.tfevents.2").write_bytes(b"event-b")
    sync = TensorBoardSync(local, s3, "tensorboard/exp1/")

    assert sorted(sync.sync()) == ["tensorboard/exp1/events.out.tfevents.1",
                                   "tensorboard/exp1/train/events.out.tfevents.2"]
    assert s3.get_bytes("tensorboard/exp1/train/events.out.tfevents.2") == b"event-b"
    assert sync.sync() == []

    with open(local / "train" / "events.out.tfevents.2", "ab") as handle:
        handle.write(b"-more")
    assert sync.sync() == ["tensorboard/exp1/train/events.out.tfevents.2"]
    assert s3.get_bytes("tensorboard/exp1/train/events.out.tfevents.2") == b"event-b-more"

    (local / "events.out.tfevents.3").write_bytes(b"event-c")
    assert sync.sync() == ["tensorboard/exp1/events.out.tfevents.3"]


def test_tensorboard_restore_into_empty_dir(s3, tmp_path):
    source = tmp_path / "tb"
    (source / "val").mkdir(parents=True)
    (source / "events.1").write_bytes(b"one")
    (source / "val" / "events.2").write_bytes(b"two")
    TensorBoardSync(source, s3, "tensorboard/exp1/").sync()
    s3.put_bytes("tensorboard/exp10/events.other", b"another experiment")

    target = tmp_path / "resumed"
    restored = TensorBoardSync(target, s3, "tensorboard/exp1/")
    assert restored.restore() == 2
    assert (target / "events.1").read_bytes() == b"one"
    assert (target / "val" / "events.2").read_bytes() == b"two"
    assert not (target / "events.other").exists()
    assert restored.sync() == []  # restored files are not uploaded again


def test_tensorboard_sync_without_dir_uploads_nothing(s3, tmp_path):
    assert TensorBoardSync(tmp_path / "missing", s3, "tensorboard/exp1/").sync() == []
    assert list(s3.list("tensorboard/")) == []


def test_upload_log(s3, tmp_path, bucket):
    log_path = tmp_path / "training.log"
    assert upload_log(s3, Layout(experiment="exp1"), log_path) is None
    log_path.write_text("epoch 1 done\n")
    assert upload_log(s3, Layout(experiment="exp1"), log_path) == f"s3://{bucket}/logs/exp1/training_latest.log"
    assert s3.get_bytes("logs/exp1/training_latest.log") == b"epoch 1 done\n"


# ----------------------------------------------------------------------------- format 2, and format 1 migrated


def _format_1(checkpoint) -> dict:
    """The dict pokevq wrote before format 2: `position`, `run_id` and `skipped` only when it had them."""
    state = checkpoint.to_state()
    state["format_version"] = 1
    for key in ("position", "run_id", "skipped"):
        if not state[key]:
            del state[key]
    return state


def test_format_2_holds_every_field_and_a_format_1_checkpoint_resumes(tmp_path, synth_frames):
    from pokevq.train.checkpoint import Checkpoint
    from pokevq.train.trainer import Trainer
    from tests.helpers.runs import first_epoch_checkpoint

    config, manifest, source, written = first_epoch_checkpoint(synth_frames, tmp_path, "v1", val_fraction=0.2)
    on_disk = torch.load(written, weights_only=True)
    assert on_disk["format_version"] == FORMAT_VERSION == 2
    assert set(on_disk) == {"format_version", "model", "optimizer", "epoch", "global_step", "config",
                            "model_config", "metrics", "history", "best", "rng", "position", "run_id", "skipped"}

    old = tmp_path / "format1.pt"
    torch.save(_format_1(load_checkpoint(written)), old)
    migrated = Checkpoint.load(old)
    assert (migrated.epoch, migrated.position, migrated.run_id, migrated.skipped) == (1, None, "", {})
    assert migrated.config["experiment_name"] == "v1" and migrated.history[0]["epoch"] == 1
    resumed = Trainer(config, manifest, source, tmp_path / "two", resume_state=migrated, resume_name=str(old))
    try:
        assert resumed.start_epoch == 2
        result = resumed.train_epoch(2)
    finally:
        resumed.close()
    assert result.global_step > migrated.global_step
    assert load_checkpoint(result.checkpoint_path)["format_version"] == 2  # written in the new format


def test_a_mid_epoch_format_1_checkpoint_keeps_its_position_and_run(tmp_path, saved):
    from pokevq.train.checkpoint import Checkpoint

    model, optimizer, _, _ = saved
    state = _format_1(checkpoint_of(model, optimizer, epoch=3))
    state.update(position={"kind": "streaming", "epoch": 4, "batch_size": 4, "world_size": 1, "segments": []},
                 run_id="run-1", skipped={"a.png": "empty file"})
    path = tmp_path / "step.pt"
    torch.save(state, path)
    loaded = Checkpoint.load(path)
    assert loaded.position["epoch"] == 4 and loaded.run_id == "run-1" and loaded.skipped == {"a.png": "empty file"}


def test_a_field_of_the_wrong_type_is_one_line(tmp_path, saved):
    model, optimizer, _, _ = saved
    state = checkpoint_of(model, optimizer).to_state()
    state["epoch"] = "three"
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"^Checkpoint .*odd.pt is not a valid pokevq checkpoint: epoch is str, "
                                              r"not int$"):
        load_checkpoint(path)
