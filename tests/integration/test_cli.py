"""The command line as a user meets it: flags, --help, and one-line errors for every bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pokevq import cli
from pokevq.config import TrainConfig
from tests.helpers.cli_cases import run_cli_cases
from tests.helpers.runs import TINY_FLAGS

TINY = [*TINY_FLAGS, "--num-workers", "0", "--epochs", "1", "--batch-size", "4"]


def test_help_documents_every_option():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--use-s3", "--s3-bucket", "--s3-region", "--s3-endpoint-url", "--frames-dir", "--cache-dir",
                 "--max-cache-size", "--experiment-name", "--batch-size", "--epochs", "--learning-rate", "--resume",
                 "--output-dir", "--no-fallback", "--device", "--seed", "--num-workers", "--image-size",
                 "--hidden-channels", "--codebook-size", "--embedding-dim", "--downsample", "--val-fraction",
                 "--debug"):
        assert flag in help_text, flag


def test_guide_command_line_maps_to_config():
    args = cli.build_parser().parse_args(
        ["train", "--use-s3", "--s3-bucket", "B", "--s3-region", "us-east-1", "--frames-dir", "pokemon_frames",
         "--cache-dir", "/tmp/pokemon_cache", "--experiment-name", "my_s3_experiment", "--batch-size", "16",
         "--epochs", "50"]
    )
    config = cli.config_from_args(args)
    assert config == TrainConfig(
        use_s3=True, s3_bucket="B", s3_region="us-east-1", frames_dir="pokemon_frames",
        local_cache_dir="/tmp/pokemon_cache", experiment_name="my_s3_experiment", batch_size=16, num_epochs=50,
    )


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--epochs", "-1"], "--epochs"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--downsample", "3"], "--downsample"),
        (["--image-size", "144by160"], "--image-size"),
        (["--val-fraction", "1.5"], "--val-fraction"),
    ],
)
def test_invalid_values_name_the_flag(args, flag, capsys):
    assert cli.main(["train", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and flag in err
    assert err.count("Error: ") == 1 and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_wrong_type_is_refused_by_argparse_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--batch-size", "many"])
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def _run_cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()):
    import os

    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pokevq", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _last_error_line(stderr: str) -> str:
    """The one `Error:` line of a failed command (exactly one, and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[-1]


@pytest.fixture(scope="module")
def prefect_server_env(prefect_harness):
    """Subprocess CLIs use the harness' API instead of each starting a temporary server."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.fixture(scope="module")
def train_errors(tmp_path_factory, moto_endpoint, synth_frames, prefect_server_env) -> SimpleNamespace:
    """`results`: case -> (exit code, the command's output) for each bad input below; and what they were given."""
    import os
    import uuid

    import boto3

    from pokevq.storage.local_server import free_port

    root = tmp_path_factory.mktemp("cli-errors")
    empty = f"pokevq-cli-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=empty)
    down = f"http://127.0.0.1:{free_port()}"
    blocker = root / "a-file"
    blocker.write_text("not a directory")
    s3 = ["--use-s3", "--no-fallback", *TINY]
    cases = {
        "no-credentials": (["train", "--s3-bucket", empty, "--s3-endpoint-url", moto_endpoint, *s3],
                           ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        "endpoint-down": (["train", "--s3-bucket", empty, "--s3-endpoint-url", down, *s3], []),
        "missing-bucket": (["train", "--s3-bucket", "no-such-bucket-pokevq", "--s3-endpoint-url", moto_endpoint, *s3],
                           []),
        "empty-prefix": (["train", "--s3-bucket", empty, "--s3-endpoint-url", moto_endpoint, *s3], []),
        "unwritable-cache": (["train", "--frames-dir", str(synth_frames), "--cache-dir", str(blocker / "cache"),
                              *TINY], []),
        "missing-checkpoint": (["train", "--frames-dir", str(synth_frames), "--resume",
                                str(root / "nope" / "checkpoint_latest.pt"), *TINY], []),
    }
    # Every case through `pokevq.cli.main` (exactly what the command runs) in one interpreter.
    return SimpleNamespace(results=run_cli_cases(cases, {**os.environ, **prefect_server_env}, root),
                           down=down, empty=empty, blocker=blocker)


def test_no_credentials(train_errors):
    rc, output = train_errors.results["no-credentials"]
    assert rc == 1
    assert _last_error_line(output).startswith("Error: AWS credentials not found")


def test_endpoint_down(train_errors):
    down = train_errors.down
    rc, output = train_errors.results["endpoint-down"]
    assert rc == 1
    assert _last_error_line(output).startswith(f"Error: Unable to connect to S3 at {down}")
    # How fast is bounded by configuration (test_validate.py) and measured in benchmarks/fail_fast.py, not by a clock.


def test_missing_bucket(train_errors):
    rc, output = train_errors.results["missing-bucket"]
    assert rc == 1
    assert "no-such-bucket-pokevq does not exist" in _last_error_line(output)


def test_empty_frames_prefix(train_errors):
    empty = train_errors.empty
    rc, output = train_errors.results["empty-prefix"]
    assert rc == 1
    assert _last_error_line(output).startswith(f"Error: No frames found under s3://{empty}/pokemon_frames/")


def test_unwritable_cache_dir(train_errors):
    blocker = train_errors.blocker
    rc, output = train_errors.results["unwritable-cache"]
    assert rc == 1
    assert _last_error_line(output).startswith(f"Error: Cannot create cache directory {blocker / 'cache'}")


def test_resume_from_missing_checkpoint(train_errors):
    rc, output = train_errors.results["missing-checkpoint"]
    assert rc == 1
    assert _last_error_line(output).startswith("Error: Checkpoint not found: ")


def test_debug_shows_the_traceback(tmp_path, prefect_server_env):
    done = _run_cli(["train", "--frames-dir", str(tmp_path / "empty"), "--debug", *TINY], tmp_path,
                    prefect_server_env)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "NoFramesError" in done.stderr


def test_synth_and_upload_commands(tmp_path, moto_endpoint, bucket, s3_client):
    done = _run_cli(["synth", "--out", "frames", "--games", "1", "--episodes", "2", "--frames", "3"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(tmp_path / "frames").as_posix() for p in (tmp_path / "frames").rglob("*.png")) == [
        f"game1/episode{e}/frame_{f:03d}.png" for e in (1, 2) for f in (1, 2, 3)
    ]
    done = _run_cli(["upload", "frames", "--s3-bucket", bucket, "--s3-endpoint-url", moto_endpoint], tmp_path)
    assert done.returncode == 0, done.stderr
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="pokemon_frames/")["Contents"]
    # The frames, and their annotations (palettes, dialog boxes) for the quality metrics.
    assert sorted(o["Key"] for o in listed) == [
        f"pokemon_frames/game1/episode{e}/frame_{f:03d}.png" for e in (1, 2) for f in (1, 2, 3)
    ] + ["pokemon_frames/synth_index.json"]


@pytest.mark.e2e
def test_quickstart_demo_runs_the_default_model_end_to_end(tmp_path, prefect_server_env):
    """The Quickstart's first command (`pokevq demo`, here for 1 epoch): local S3, synthetic frames, a report."""
    done = _run_cli(["demo", "--epochs", "1", "--out", "demo_outputs"], tmp_path, env_extra=prefect_server_env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    finished = next(line for line in done.stdout.splitlines() if line.startswith("Demo finished"))
    assert re.search(r"1 epoch, validation PSNR \d+\.\d+ dB, pixel accuracy \d+\.\d+%, "
                     r"\d+ codes used for \d+ distinct tiles\.$", finished), finished
    reports = list((tmp_path / "demo_outputs" / "s3" / "reports").glob("demo-*/report.md"))
    assert len(reports) == 1
    report = reports[0].read_text()
    assert "### Tokenizer quality (validation episodes, epoch 1)" in report
    assert "| dialog-box accuracy | –" not in report  # the demo uploads the frames' annotations
    assert (reports[0].parent / "reconstructions.png").is_file()
    checkpoints = tmp_path / "demo_outputs" / "s3" / "checkpoints"
    checkpoint = torch.load(next(checkpoints.glob("demo-*/checkpoint_latest.pt")), weights_only=True)
    assert (checkpoint["model_config"]["architecture"], checkpoint["model_config"]["codebook_size"]) == ("patch", 65536)
