"""validate_setup against moto's real server: S3 plans, clear failures, the local fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pokevq.config import TrainConfig
from pokevq.errors import (
    BucketNotFoundError,
    CacheDirError,
    ConnectError,
    CredentialsNotFoundError,
    NoFramesError,
)
from pokevq.run.validate import StoragePlan, validate_setup
from pokevq.storage import LocalStorage, S3Storage
from pokevq.storage.local_server import free_port
from tests.helpers.frames import upload_tree


def s3_config(tmp_path: Path, bucket: str, endpoint: str, **changes) -> TrainConfig:
    values = dict(
        use_s3=True,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        frames_dir="pokemon_frames",
        output_dir=str(tmp_path / "outputs"),
        experiment_name="exp1",
    )
    values.update(changes)
    return TrainConfig(**values)


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_success_gives_s3_plan_and_leaves_no_probes(tmp_path, bucket, moto_endpoint, s3_client, synth_frames):
    uploaded = upload_tree(s3_client, bucket, synth_frames, "pokemon_frames/")
    config = s3_config(tmp_path, bucket, moto_endpoint, local_cache_dir=str(tmp_path / "cache"))
    plan = validate_setup(config.storage, config.run.experiment_name)
    assert plan.backend == "s3"
    assert plan.bucket == bucket
    assert plan.endpoint_url == moto_endpoint
    assert plan.region == "us-east-1"
    assert plan.frames_prefix == "pokemon_frames/"
    assert plan.fallback_reason is None
    assert plan.output_root == str((tmp_path / "outputs").resolve())
    assert (tmp_path / "cache").is_dir()

    keys = sorted(item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == sorted(uploaded)

    # The plan travels between tasks as a dict and builds working storages.
    again = StoragePlan.from_dict(plan.to_dict())
    assert again == plan
    storage = again.frames_storage()
    assert isinstance(storage, S3Storage)
    assert storage.exists(uploaded[0])
    assert f"s3://{bucket}" in plan.describe()


def test_missing_bucket_without_fallback(tmp_path, moto_endpoint, synth_frames):
    config = s3_config(tmp_path, "pokevq-no-such-bucket-abc", moto_endpoint, no_fallback=True)
    with pytest.raises(BucketNotFoundError, match="^S3 bucket pokevq-no-such-bucket-abc does not exist"):
        validate_setup(config.storage, config.run.experiment_name)


def test_missing_bucket_falls_back_when_allowed(tmp_path, moto_endpoint, synth_frames):
    config = s3_config(tmp_path, "pokevq-no-such-bucket-abc", moto_endpoint, frames_dir=str(synth_frames))
    plan = validate_setup(config.storage, config.run.experiment_name)
    assert plan.backend == "local"
    assert "does not exist" in plan.fallback_reason


def test_endpoint_down_without_fallback_is_quick(tmp_path):
    endpoint = dead_endpoint()
    config = s3_config(tmp_path, "some-bucket", endpoint, no_fallback=True)
    with pytest.raises(ConnectError) as info:
        validate_setup(config.storage, config.run.experiment_name)
    assert str(info.value).startswith(f"Unable to connect to S3 at {endpoint}")


def test_endpoint_down_falls_back_to_local(tmp_path, synth_frames):
    config = s3_config(tmp_path, "some-bucket", dead_endpoint(), frames_dir=str(synth_frames))
    plan = validate_setup(config.storage, config.run.experiment_name)
    assert plan.backend == "local"
    assert "Unable to connect" in plan.fallback_reason
    assert plan.output_root == str((tmp_path / "outputs").resolve())
    assert Path(plan.output_root).is_dir()
    assert plan.frames_root == str(synth_frames.resolve())
    frames = plan.frames_storage()
    assert isinstance(frames, LocalStorage)
    assert frames.exists("game1/episode1/frame_001.png")
    assert isinstance(plan.output_storage(), LocalStorage)


def test_fallback_without_local_frames_names_both_problems(tmp_path):
    missing = tmp_path / "no-frames-here"
    config = s3_config(tmp_path, "some-bucket", dead_endpoint(), frames_dir=str(missing))
    with pytest.raises(NoFramesError) as info:
        validate_setup(config.storage, config.run.experiment_name)
    message = str(info.value)
    assert "Unable to connect" in message
    assert str(missing.resolve()) in message


def test_empty_frames_prefix_without_fallback(tmp_path, bucket, moto_endpoint, s3_client):
    s3_client.put_object(Bucket=bucket, Key="pokemon_frames/.DS_Store", Body=b"junk")
    s3_client.put_object(Bucket=bucket, Key="other/game1/episode1/frame_001.png", Body=b"x")
    config = s3_config(tmp_path, bucket, moto_endpoint, no_fallback=True)
    with pytest.raises(NoFramesError, match=f"^No frames found under s3://{bucket}/pokemon_frames/"):
        validate_setup(config.storage, config.run.experiment_name)
    keys = sorted(item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["other/game1/episode1/frame_001.png", "pokemon_frames/.DS_Store"]


def test_no_credentials_without_fallback(tmp_path, bucket, moto_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    config = s3_config(tmp_path, bucket, moto_endpoint, no_fallback=True)
    with pytest.raises(CredentialsNotFoundError, match="^AWS credentials not found"):
        validate_setup(config.storage, config.run.experiment_name)


def test_cache_dir_under_a_file(tmp_path, synth_frames):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = TrainConfig(
        frames_dir=str(synth_frames), output_dir=str(tmp_path / "outputs"), local_cache_dir=str(blocker / "cache")
    )
    with pytest.raises(CacheDirError, match="^Cannot create cache directory"):
        validate_setup(config.storage, config.run.experiment_name)
    assert blocker.read_text() == "not a directory"


def test_cache_dir_error_is_not_hidden_by_fallback(tmp_path, synth_frames):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = s3_config(tmp_path, "b", dead_endpoint(), frames_dir=str(synth_frames), local_cache_dir=str(blocker / "c"))
    with pytest.raises(CacheDirError, match="Cannot create cache directory"):
        validate_setup(config.storage, config.run.experiment_name)


def test_local_mode(tmp_path, synth_frames):
    config = TrainConfig(frames_dir=str(synth_frames), output_dir=str(tmp_path / "outputs"))
    plan = validate_setup(config.storage, config.run.experiment_name)
    assert plan.backend == "local"
    assert plan.fallback_reason is None
    assert plan.frames_root == str(synth_frames.resolve())
    assert plan.output_root == str((tmp_path / "outputs").resolve())
    assert plan.bucket is None


def test_local_mode_without_frames(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    config = TrainConfig(frames_dir=str(empty), output_dir=str(tmp_path / "outputs"))
    with pytest.raises(NoFramesError, match="No frames found under"):
        validate_setup(config.storage, config.run.experiment_name)


# --- the --resume check runs before any heavy work, and answers fast -------------------------------


def test_resume_from_a_missing_bucket_names_the_bucket(moto_endpoint):
    from pokevq.errors import BucketNotFoundError
    from pokevq.run.resume import check_resume_exists

    config = TrainConfig(
        resume="s3://typo-bucket-pokevq/checkpoints/exp/checkpoint_latest.pt", s3_endpoint_url=moto_endpoint
    )
    with pytest.raises(BucketNotFoundError, match="typo-bucket-pokevq does not exist"):
        check_resume_exists(config)


def test_resume_from_a_missing_key_says_checkpoint_not_found(moto_endpoint, bucket):
    from pokevq.errors import CheckpointNotFoundError
    from pokevq.run.resume import check_resume_exists

    uri = f"s3://{bucket}/checkpoints/exp/checkpoint_latest.pt"
    with pytest.raises(CheckpointNotFoundError, match=f"^Checkpoint not found: {uri}"):
        check_resume_exists(TrainConfig(resume=uri, s3_endpoint_url=moto_endpoint))


def test_resume_check_against_a_dead_endpoint_fails_in_seconds():
    from pokevq.errors import ConnectError
    from pokevq.run.resume import check_resume_exists
    from pokevq.storage.local_server import free_port

    config = TrainConfig(resume="s3://b/checkpoints/e/checkpoint_latest.pt",
                         s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError, match="^Unable to connect to S3 at"):
        check_resume_exists(config)


def test_a_dead_endpoint_is_answered_within_15_s_by_configuration():
    """Validation and the resume check use FAST_FAIL clients: every attempt's connect timeout, all attempts,
    stay within 15 s (benchmarks/fail_fast.py measures it)."""
    from pokevq.storage import FAST_FAIL, S3Storage

    storage = S3Storage("b", "us-east-1", endpoint_url="http://127.0.0.1:9", **FAST_FAIL)
    config = storage.client.meta.config
    assert config.connect_timeout * config.retries["total_max_attempts"] <= 15
