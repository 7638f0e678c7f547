"""End to end: the `pokevq` flow over moto's S3, with corrupt frames, then a resume from s3://."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from flows import train
from pokevq import TrainConfig
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY, list_keys, s3_train_config, tensorboard_scalars

pytestmark = pytest.mark.e2e


def _corrupt_objects(client, bucket: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 144), (10, 200, 30)).save(buffer, format="PNG")
    png = buffer.getvalue()
    prefix = "pokemon_frames/game1/episode1/"
    client.put_object(Bucket=bucket, Key=prefix + "frame_900.png", Body=png[: len(png) // 2])  # truncated
    client.put_object(Bucket=bucket, Key=prefix + "frame_901.png", Body=b"")  # zero bytes
    client.put_object(Bucket=bucket, Key=prefix + "frame_902.png", Body=b"this is not an image")
    client.put_object(Bucket=bucket, Key="pokemon_frames/.DS_Store", Body=b"\x00\x01junk")


@pytest.fixture
def e2e_bucket(bucket, s3_client, synth_frames):
    upload_tree(s3_client, bucket, synth_frames)
    _corrupt_objects(s3_client, bucket)
    return bucket


def _config(tmp_path: Path, bucket: str, endpoint: str, **overrides) -> TrainConfig:
    return s3_train_config(tmp_path, bucket, endpoint, **{"experiment_name": "e2e", **overrides})


def _scalars(client, bucket: str, target: Path) -> dict[str, list]:
    return tensorboard_scalars(client, bucket, "e2e", target)


def test_flow_trains_uploads_reports_and_resumes(prefect_harness, tmp_path, moto_endpoint, e2e_bucket, s3_client):
    summary = train(_config(tmp_path, e2e_bucket, moto_endpoint))

    # The guide's layout, every object present.
    keys = set(list_keys(s3_client, e2e_bucket, ""))
    for expected in (
        "checkpoints/e2e/checkpoint_epoch_1.pt",
        "checkpoints/e2e/checkpoint_epoch_2.pt",
        "checkpoints/e2e/checkpoint_latest.pt",
        "checkpoints/e2e/checkpoint_best.pt",
        "logs/e2e/training_latest.log",
        "manifests/e2e/manifest.parquet",
        "reports/e2e/report.md",
        "reports/e2e/reconstructions.png",
    ):
        assert expected in keys, f"{expected} missing from the bucket"
    assert any(k.startswith("tensorboard/e2e/events.out.tfevents") for k in keys)
    assert not any(".pokevq-write-probe" in k for k in keys), "validation probes must be cleaned up"

    # TensorBoard scalars readable with tensorboard's own reader.
    scalars = _scalars(s3_client, e2e_bucket, tmp_path / "tb1")
    assert [e.step for e in scalars["epoch/val_loss"]] == [1, 2]
    assert "train/loss" in scalars and "epoch/val_perplexity" in scalars and "epoch/cache_hit_rate" in scalars

    # The 3 corrupt frames were skipped and said so in the log and the report; .DS_Store never indexed.
    assert summary["skipped_frames"] == 3
    report = s3_client.get_object(Bucket=e2e_bucket, Key="reports/e2e/report.md")["Body"].read().decode()
    assert "Skipped frames: 3" in report
    for name in ("frame_900.png", "frame_901.png", "frame_902.png"):
        assert name in report
    log = s3_client.get_object(Bucket=e2e_bucket, Key="logs/e2e/training_latest.log")["Body"].read().decode()
    assert log.count("Skipped frame") == 3
    assert "S3 get_object" in log  # every S3 operation's outcome is recorded
    assert "Frames indexed: 27" in report  # 24 good + 3 corrupt .png; .DS_Store not indexed

    # The checkpoint is a plain dict loadable with weights_only=True.
    body = s3_client.get_object(Bucket=e2e_bucket, Key="checkpoints/e2e/checkpoint_latest.pt")["Body"].read()
    state = torch.load(io.BytesIO(body), weights_only=True)
    assert state["epoch"] == 2
    assert {"model", "optimizer", "global_step", "config", "metrics", "rng"} <= set(state)
    assert state["global_step"] > 0

    # Resume from the s3:// URI for a third epoch: epoch and global step continue.
    resumed = train(
        _config(
            tmp_path,
            e2e_bucket,
            moto_endpoint,
            experiment_name=None,  # taken from the checkpoint's place in the layout
            num_epochs=3,
            resume=f"s3://{e2e_bucket}/checkpoints/e2e/checkpoint_latest.pt",
        )
    )
    assert resumed["epochs_trained"] == 3  # the history carries on
    body = s3_client.get_object(Bucket=e2e_bucket, Key="checkpoints/e2e/checkpoint_latest.pt")["Body"].read()
    state3 = torch.load(io.BytesIO(body), weights_only=True)
    assert state3["epoch"] == 3
    # The step counter continues from the checkpoint (a batch of only corrupt frames takes no step).
    batches = -(-27 // 4)  # at most one step per batch of the 27 indexed frames
    assert state["global_step"] < state3["global_step"] <= state["global_step"] + batches
    assert [h["epoch"] for h in state3["history"]] == [1, 2, 3]
    assert state3["history"][:2] == state["history"]  # completed epochs' metrics unchanged
    assert "checkpoints/e2e/checkpoint_epoch_3.pt" in list_keys(s3_client, e2e_bucket, "checkpoints/e2e/")
    scalars = _scalars(s3_client, e2e_bucket, tmp_path / "tb2")
    assert [e.step for e in scalars["epoch/val_loss"]] == [1, 2, 3]


def test_without_s3_writes_the_same_layout_locally(prefect_harness, tmp_path, synth_frames):
    config = TrainConfig(
        frames_dir=str(synth_frames),
        experiment_name="local",
        num_epochs=1,
        batch_size=4,
        num_workers=0,
        output_dir=str(tmp_path / "out"),
        **TINY,
    )
    summary = train(config)
    root = tmp_path / "out"
    for relative in (
        "checkpoints/local/checkpoint_epoch_1.pt",
        "checkpoints/local/checkpoint_latest.pt",
        "checkpoints/local/checkpoint_best.pt",
        "logs/local/training_latest.log",
        "manifests/local/manifest.parquet",
        "reports/local/report.md",
    ):
        assert (root / relative).is_file(), relative
    assert summary["fallback"] is False
    assert summary["epochs_trained"] == 1


def test_fallback_to_local_storage_when_s3_is_unreachable(prefect_harness, tmp_path, synth_frames):
    from pokevq.storage.local_server import free_port

    config = TrainConfig(
        use_s3=True,
        s3_bucket="unreachable",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        frames_dir=str(synth_frames),
        experiment_name="fallback",
        num_epochs=1,
        batch_size=4,
        num_workers=0,
        output_dir=str(tmp_path / "out"),
        **TINY,
    )
    summary = train(config)
    assert summary["fallback"] is True
    report = (tmp_path / "out" / "reports" / "fallback" / "report.md").read_text()
    assert "fell back to local storage" in report
    assert "Unable to connect to S3" in report
    assert (tmp_path / "out" / "checkpoints" / "fallback" / "checkpoint_latest.pt").is_file()


def test_quality_metrics_reach_tensorboard_report_and_artifacts(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client
):
    """Frames uploaded with `pokevq upload` carry their annotations; the validation metrics use them."""
    from prefect.client.orchestration import get_client

    from pokevq.data.upload_frames import upload_directory
    from pokevq.synth.generate import generate_dataset

    frames = tmp_path / "frames"
    generate_dataset(frames, games=1, episodes=2, frames=45, seed=0)  # a dialog in every episode
    config = _config(tmp_path, bucket, moto_endpoint, experiment_name="quality", num_epochs=1, image_size="144x160",
                     hidden_channels=16, embedding_dim=8, codebook_size=64)
    upload_directory(frames, config.storage, threads=4)
    summary = train(config)

    val = summary["final"]["val"]
    for name in ("psnr", "ssim", "pixel_accuracy", "exact_frames", "dialog_accuracy", "token_stability",
                 "codebook_usage", "perplexity", "dead_codes", "data_tiles", "data_tile_perplexity"):
        assert name in val, name
    for name in ("pixel_accuracy", "dialog_accuracy", "token_stability", "ssim", "exact_frames"):
        assert 0 <= val[name] <= 1, name
    assert val["dead_codes"] == round(64 * (1 - val["codebook_usage"]))

    scalars = tensorboard_scalars(s3_client, bucket, "quality", tmp_path / "tb")
    for tag in ("epoch/val_ssim", "epoch/val_pixel_accuracy", "epoch/val_dialog_accuracy",
                "epoch/val_token_stability", "epoch/val_dead_codes", "epoch/val_perplexity"):
        assert [e.step for e in scalars[tag]] == [1], tag
    assert scalars["epoch/val_pixel_accuracy"][0].value == pytest.approx(val["pixel_accuracy"], rel=1e-5)

    report = s3_client.get_object(Bucket=bucket, Key="reports/quality/report.md")["Body"].read().decode()
    assert "### Tokenizer quality (validation episodes, epoch 1)" in report
    assert f"| dialog-box accuracy | {100 * val['dialog_accuracy']:.3f} % |" in report
    assert f"| distinct tiles in the data | {val['data_tiles']} |" in report

    # The floors and the bound, scored on the same validation frames, next to the model in report and TensorBoard.
    baselines = summary["final"]["baselines"]
    exact = baselines["exact dictionary"]
    # k-means 512 only where the training tiles outnumber it (else it is the exact dictionary)
    assert list(baselines) == ["k-means 64", *(["k-means 512"] if exact["codes"] > 512 else []), "exact dictionary"]
    assert baselines["k-means 64"]["codes"] == 64 < exact["codes"]
    assert exact["psnr"] > baselines["k-means 64"]["psnr"]
    assert "### Against tile dictionaries (8×8 tiles, one code each, same validation frames)" in report
    assert f"| exact dictionary | {exact['codes']} | {exact['psnr']:.2f} dB | {100 * exact['pixel_accuracy']:.3f} % |" \
        in report
    assert scalars["baselines/exact_dictionary_psnr"][0].value == pytest.approx(exact["psnr"], rel=1e-5)

    async def table_artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    tables = [a for a in asyncio.run(table_artifact()) if a.key == "quality-metrics"]
    assert tables and "token_stability" in str(tables[0].data)
