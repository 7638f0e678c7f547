"""`--resume` end to end (docs/storage.md "Resume"): from a local checkpoint path, from an s3:// URI that alone names
the bucket and the experiment, and `checkpoint_best.pt` kept across a resume when a later epoch is worse."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from flows import train
from pokevq import TrainConfig
from pokevq.cli.main import build_parser, config_from_args
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY, TINY_FLAGS, list_keys, s3_train_config

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread_seeded")]


def _frame_log(path: Path) -> list[tuple[int, int]]:
    """(epoch, global step) of every frame a run trained, from its `POKEVQ_FRAME_LOG`."""
    rows = []
    for line in path.read_text().splitlines():
        epoch, step, _ = line.split(" ", 2)
        rows.append((int(epoch), int(step)))
    return rows


def _s3_checkpoint(s3_client, bucket: str, key: str) -> tuple[bytes, dict]:
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body, torch.load(io.BytesIO(body), weights_only=True)


def test_resume_from_a_local_checkpoint_path_continues_from_that_epoch(
    prefect_harness, tmp_path, synth_frames, monkeypatch
):
    """A local `.pt` path resumes like an s3:// URI: the epoch after the checkpoint's, its step, its history,
    in the experiment the path names."""
    out = tmp_path / "out"
    base = dict(frames_dir=str(synth_frames), batch_size=4, num_workers=0, learning_rate=1e-3, output_dir=str(out),
                **TINY)
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(tmp_path / "first.log"))
    first = train(TrainConfig(experiment_name="local-resume", num_epochs=2, **base))
    assert first["epochs_trained"] == 2 and first["fallback"] is False
    folder = out / "checkpoints" / "local-resume"
    epoch1 = torch.load(folder / "checkpoint_epoch_1.pt", weights_only=True)
    epoch2 = torch.load(folder / "checkpoint_epoch_2.pt", weights_only=True)
    steps = epoch1["global_step"]  # steps per epoch: every batch of these frames takes one
    assert steps > 0 and epoch2["global_step"] == 2 * steps

    # Resume from epoch 1's file (not the latest) for 3 epochs in all: epochs 2 and 3 are trained, from its step.
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(tmp_path / "resumed.log"))
    resumed = train(TrainConfig(resume=str(folder / "checkpoint_epoch_1.pt"), num_epochs=3, **base))

    # In the experiment the path names (its place in the layout): the same report, checkpoints, log.
    assert resumed["report_uri"] == str(out / "reports" / "local-resume" / "report.md")
    trained = _frame_log(tmp_path / "resumed.log")
    assert sorted({epoch for epoch, _ in trained}) == [2, 3], "the resumed run must train epochs 2 and 3 only"
    assert sorted({step for _, step in trained}) == list(range(steps + 1, 3 * steps + 1)), \
        "the global step must continue from the checkpoint's"
    assert resumed["epochs_trained"] == 3
    latest = torch.load(folder / "checkpoint_latest.pt", weights_only=True)
    assert latest["epoch"] == 3 and latest["global_step"] == 3 * steps
    assert [h["epoch"] for h in latest["history"]] == [1, 2, 3]
    assert [h["global_step"] for h in latest["history"]] == [steps, 2 * steps, 3 * steps]
    assert latest["history"][0] == epoch1["history"][0]  # the resumed-from epoch's metrics are kept as they were
    assert (folder / "checkpoint_epoch_3.pt").is_file()


def test_resume_from_an_s3_uri_alone_takes_its_bucket_and_experiment(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    """`pokevq train --use-s3 --resume s3://BUCKET/checkpoints/EXP/checkpoint_latest.pt` with no --s3-bucket and no
    --experiment-name writes the continued run into that bucket and that experiment."""
    upload_tree(s3_client, bucket, synth_frames)
    train(s3_train_config(tmp_path / "first", bucket, moto_endpoint, experiment_name="from-uri", num_epochs=1))
    _, before = _s3_checkpoint(s3_client, bucket, "checkpoints/from-uri/checkpoint_latest.pt")
    assert before["epoch"] == 1
    objects_before = set(list_keys(s3_client, bucket))

    # The command line as docs/storage.md gives it; parsed by `pokevq train`'s own parser (no --s3-bucket, no name).
    root = tmp_path / "resumed"
    args = build_parser().parse_args([
        "train", "--use-s3", "--resume", f"s3://{bucket}/checkpoints/from-uri/checkpoint_latest.pt", "--epochs", "2",
        "--s3-endpoint-url", moto_endpoint, "--batch-size", "4", "--learning-rate", "1e-3", "--num-workers", "0",
        "--cache-dir", str(root / "cache"), "--output-dir", str(root / "outputs"), "--no-fallback", *TINY_FLAGS,
    ])
    assert "s3_bucket" not in vars(args) and "experiment_name" not in vars(args)
    summary = train(config_from_args(args))

    assert summary["report_uri"] == f"s3://{bucket}/reports/from-uri/report.md"
    assert summary["epochs_trained"] == 2
    _, after = _s3_checkpoint(s3_client, bucket, "checkpoints/from-uri/checkpoint_latest.pt")
    assert after["epoch"] == 2
    assert before["global_step"] < after["global_step"] == 2 * before["global_step"]
    assert [h["epoch"] for h in after["history"]] == [1, 2]
    assert after["history"][0] == before["history"][0]
    new = set(list_keys(s3_client, bucket)) - objects_before
    assert "checkpoints/from-uri/checkpoint_epoch_2.pt" in new
    # Everything the resumed run wrote is in that experiment's prefixes (and nothing locally in their place).
    assert {key.split("/")[1] for key in new} == {"from-uri"}, sorted(new)
    assert not (root / "outputs" / "checkpoints").exists()


def test_checkpoint_best_survives_a_resume_when_a_later_epoch_is_worse(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    """The best-so-far comes back with the checkpoint: a worse epoch after a resume does not move checkpoint_best.pt."""
    upload_tree(s3_client, bucket, synth_frames)
    prefix = "checkpoints/best-kept/"
    train(s3_train_config(tmp_path / "first", bucket, moto_endpoint, experiment_name="best-kept", num_epochs=2))
    best_before, best_state = _s3_checkpoint(s3_client, bucket, prefix + "checkpoint_best.pt")
    best_epoch = best_state["best"]["epoch"]
    assert best_before == s3_client.get_object(Bucket=bucket, Key=f"{prefix}checkpoint_epoch_{best_epoch}.pt")[
        "Body"].read()

    # Resume with a learning rate far too large: epoch 3 is worse than the best.
    train(s3_train_config(tmp_path / "resumed", bucket, moto_endpoint, experiment_name=None, num_epochs=3,
                          learning_rate=10.0, resume=f"s3://{bucket}/{prefix}checkpoint_latest.pt"))
    _, latest = _s3_checkpoint(s3_client, bucket, prefix + "checkpoint_latest.pt")
    assert latest["epoch"] == 3
    losses = {h["epoch"]: h["val"]["loss"] for h in latest["history"]}
    assert sorted(losses) == [1, 2, 3]
    assert losses[3] > losses[best_epoch] == min(losses.values()), losses  # really worse: not vacuous

    assert latest["best"] == best_state["best"]  # the best-so-far carried through the resume
    best_after = s3_client.get_object(Bucket=bucket, Key=prefix + "checkpoint_best.pt")["Body"].read()
    assert best_after == best_before, "checkpoint_best.pt moved to a worse epoch after the resume"
