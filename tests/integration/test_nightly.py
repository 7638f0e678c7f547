"""Nightly retraining runs: named after the date, warm-started from the previous nightly, never local."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
import torch

from flows import pokevq
from pokevq.errors import ConnectError
from tests.helpers.frames import upload_tree
from tests.helpers.runs import list_keys

pytestmark = pytest.mark.e2e

TINY = dict(image_size="72x80", hidden_channels=8, embedding_dim=4, codebook_size=16, num_workers=0, batch_size=4,
            num_epochs=1)


def _log(s3_client, bucket: str, experiment: str) -> str:
    return s3_client.get_object(Bucket=bucket, Key=f"logs/{experiment}/training_latest.log")["Body"].read().decode()


def _best(s3_client, bucket: str, experiment: str, name: str = "checkpoint_best.pt") -> dict:
    body = s3_client.get_object(Bucket=bucket, Key=f"checkpoints/{experiment}/{name}")["Body"].read()
    return torch.load(io.BytesIO(body), weights_only=True)


def _same_weights(warm: dict, earlier: dict) -> bool:
    name = next(k for k in earlier["model"] if k.endswith("weight"))
    return torch.allclose(warm["model"][name], earlier["model"][name], atol=1e-6)


def test_nightly_runs_are_dated_and_warm_start_from_the_previous_nightly(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    upload_tree(s3_client, bucket, synth_frames)
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, output_dir=str(tmp_path), **TINY)
    today = f"nightly-{datetime.now():%Y%m%d}"

    # Given an earlier nightly's best checkpoint, the day's nightly starts from its weights.
    pokevq(experiment_name="nightly-20200101", **common)
    earlier = _best(s3_client, bucket, "nightly-20200101")
    first = pokevq(nightly=True, learning_rate=1e-12, **common)  # a negligible step keeps the weights recognisable
    assert first["report_uri"] == f"s3://{bucket}/reports/{today}/report.md"
    log = _log(s3_client, bucket, today)
    assert f"Warm-started the model from s3://{bucket}/checkpoints/nightly-20200101/checkpoint_best.pt" in log
    warm = _best(s3_client, bucket, today, "checkpoint_latest.pt")
    assert _same_weights(warm, earlier)
    assert warm["epoch"] == 1  # a new experiment: warm start copies weights, not the epoch count
    # After training, the nightly tokenizes every episode with its best checkpoint; no nightly, no tokens.
    assert first["tokens"]["episodes"] == 4 and first["tokens"]["frames"] == 24
    assert _token_sets(s3_client, bucket, today) == {first["tokens"]["lineage_of"]["checkpoint_sha256"][:12]: 4}
    assert _token_sets(s3_client, bucket, "nightly-20200101") == {}


def test_a_second_nightly_on_the_same_day_takes_the_next_name_and_warm_starts_from_the_first(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    """Issue 24, item 7: the day's second nightly never writes into the first one's experiment."""
    upload_tree(s3_client, bucket, synth_frames)
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, output_dir=str(tmp_path),
                  tokenize_after=False, **TINY)
    today = f"nightly-{datetime.now():%Y%m%d}"

    first = pokevq(nightly=True, **common)
    assert first["report_uri"] == f"s3://{bucket}/reports/{today}/report.md"
    assert "Warm start skipped: no earlier nightly experiment" in _log(s3_client, bucket, today)
    kept = {key: s3_client.head_object(Bucket=bucket, Key=key)["ETag"] for key in list_keys(s3_client, bucket)
            if today in key}
    assert f"manifests/{today}/manifest.parquet" in kept and f"checkpoints/{today}/checkpoint_best.pt" in kept
    best = _best(s3_client, bucket, today)

    second = pokevq(nightly=True, learning_rate=1e-12, **common)
    assert second["report_uri"] == f"s3://{bucket}/reports/{today}-2/report.md"
    log = _log(s3_client, bucket, f"{today}-2")
    assert f"Warm-started the model from s3://{bucket}/checkpoints/{today}/checkpoint_best.pt" in log
    assert _same_weights(_best(s3_client, bucket, f"{today}-2", "checkpoint_latest.pt"), best)
    # Nothing of the first nightly was rewritten, and nothing was added to its experiment.
    after = {key: s3_client.head_object(Bucket=bucket, Key=key)["ETag"] for key in list_keys(s3_client, bucket)
             if today in key and f"{today}-2" not in key}
    assert after == kept

    # A third nightly that day: -3, from the day's last best (-2's).
    s3_client.copy_object(Bucket=bucket, Key=f"checkpoints/{today}-9/checkpoint_best.pt",
                          CopySource={"Bucket": bucket, "Key": f"checkpoints/{today}-2/checkpoint_best.pt"})
    third = pokevq(nightly=True, **{**common, "num_epochs": 0})
    assert third["report_uri"] == f"s3://{bucket}/reports/{today}-10/report.md"  # after -9, not after -2 as text
    assert (f"Warm-started the model from s3://{bucket}/checkpoints/{today}-9/checkpoint_best.pt"
            in _log(s3_client, bucket, f"{today}-10"))


def _token_sets(s3_client, bucket: str, experiment: str) -> dict[str, int]:
    """{checkpoint sha256[:12]: episode files} under tokens/<experiment>/."""
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"tokens/{experiment}/").get("Contents", [])
    sets: dict[str, int] = {}
    for item in listed:
        parts = item["Key"].split("/")
        if len(parts) == 5 and parts[4].endswith(".parquet"):
            sets[parts[2]] = sets.get(parts[2], 0) + 1
    return sets


def test_nightly_never_falls_back_to_local_storage(prefect_harness, tmp_path, synth_frames):
    from pokevq.storage.local_server import free_port

    with pytest.raises(ConnectError, match="^Unable to connect to S3"):
        pokevq(nightly=True, use_s3=True, s3_bucket="b", s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
               frames_dir=str(synth_frames), output_dir=str(tmp_path), **TINY)
    assert not (tmp_path / "checkpoints").exists()


def test_nightly_after_a_model_change_trains_from_scratch_and_says_why(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    # Last night's model was the conv architecture; tonight's options are the patch default.
    upload_tree(s3_client, bucket, synth_frames)
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, output_dir=str(tmp_path), **TINY)
    pokevq(experiment_name="nightly-20200101", architecture="conv", **common)
    summary = pokevq(nightly=True, **common)
    assert summary["epochs_trained"] == 1
    today = f"nightly-{datetime.now():%Y%m%d}"
    log = _log(s3_client, bucket, today)
    assert (f"Warm start skipped, training from scratch: Checkpoint s3://{bucket}/checkpoints/nightly-20200101/"
            "checkpoint_best.pt does not match the configured model: architecture='conv' (configured 'patch')") in log
    assert "Warm-started the model" not in log


def test_nightly_packs_the_new_frames_before_training(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames
):
    import pandas as pd

    upload_tree(s3_client, bucket, synth_frames)
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, output_dir=str(tmp_path), **TINY)
    pokevq(nightly=True, experiment_name="nightly-20200101", **common)

    def index_rows() -> pd.DataFrame:
        body = s3_client.get_object(Bucket=bucket, Key="pokemon_frames/_shards/index.parquet")["Body"].read()
        return pd.read_parquet(io.BytesIO(body))

    first = index_rows()
    assert len(first) == 24  # the first nightly packed every frame
    png = (synth_frames / "game1" / "episode1" / "frame_001.png").read_bytes()
    for name in ("frame_801.png", "frame_802.png"):  # the day's new frames
        s3_client.put_object(Bucket=bucket, Key=f"pokemon_frames/game1/episode1/{name}", Body=png)
    pokevq(nightly=True, experiment_name="nightly-20200102", **common)
    second = index_rows()
    assert len(second) == 26
    assert set(first["shard"]) <= set(second["shard"])  # only the new frames went into new shards
    log = _log(s3_client, bucket, "nightly-20200102")
    assert "Packed 2 new frame(s)" in log and "the index lists 26 frames" in log


def test_frames_uploaded_after_a_nightly_are_indexed_and_trained_by_the_next(
    prefect_harness, tmp_path, moto_endpoint, bucket, s3_client, synth_frames, monkeypatch
):
    """The next nightly re-indexes the bucket: a new episode uploaded after a nightly run is in the next nightly's
    manifest, and that run trains on it (every training frame of its manifest, counted from POKEVQ_FRAME_LOG)."""
    import re
    from pathlib import Path

    import pandas as pd

    from pokevq.synth.generate import generate_dataset

    def manifest(experiment: str) -> pd.DataFrame:
        body = s3_client.get_object(Bucket=bucket, Key=f"manifests/{experiment}/manifest.parquet")["Body"].read()
        return pd.read_parquet(io.BytesIO(body))

    def trained(log: Path) -> list[str]:
        return [line.split(" ", 2)[2] for line in log.read_text().splitlines()]

    upload_tree(s3_client, bucket, synth_frames)
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, output_dir=str(tmp_path),
                  tokenize_after=False, **TINY)

    # Last night's run (an earlier date), then the day's new episode arrives.
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(tmp_path / "last-night.log"))
    pokevq(nightly=True, experiment_name="nightly-20200101", **common)
    before = manifest("nightly-20200101")
    new_frames = tmp_path / "new"
    generate_dataset(new_frames, games=1, episodes=1, frames=6, seed=7)
    new_keys = upload_tree(s3_client, bucket, new_frames / "game1" / "episode1", "pokemon_frames/game2/episode3/")
    assert len(new_keys) == 6 and not set(new_keys) & set(before["key"])

    # Tonight's nightly: named by the flow (nightly-YYYYMMDD), warm-started from last night's best.
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(tmp_path / "tonight.log"))
    tonight = pokevq(nightly=True, **common)
    experiment = re.fullmatch(rf"s3://{bucket}/reports/(nightly-\d{{8}})/report\.md", tonight["report_uri"]).group(1)
    assert experiment != "nightly-20200101"

    after = manifest(experiment)
    assert len(after) == len(before) + 6
    assert set(new_keys) <= set(after["key"]), "the new episode is missing from the next nightly's manifest"
    train_keys = set(after.loc[after["split"] == "train", "key"])
    assert set(new_keys) <= train_keys  # the new episode is a training episode (seed 0): trained, not only evaluated
    log = trained(tmp_path / "tonight.log")
    assert set(log) == train_keys and len(log) == len(train_keys), "tonight's run must train every frame it indexed"
    assert not set(new_keys) & set(trained(tmp_path / "last-night.log"))
    report = s3_client.get_object(Bucket=bucket, Key=f"reports/{experiment}/report.md")["Body"].read().decode()
    assert f"Frames indexed: {len(before) + 6}" in report
