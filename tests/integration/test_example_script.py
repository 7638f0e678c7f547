"""The guide's Method 1: the example script checks the environment, masks secrets and asks first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "example_s3_training.py"


def _run(args, env_extra=None, drop=(), stdin=""):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_missing_environment_is_reported_before_anything_runs():
    done = _run([], drop=("S3_BUCKET_NAME",))
    assert done.returncode == 1
    assert "S3_BUCKET_NAME         MISSING" in done.stdout
    assert "Error: missing S3_BUCKET_NAME" in done.stderr


def test_shows_masked_configuration_and_does_not_start_when_declined(tmp_path):
    done = _run(["--epochs", "2"], env_extra={"S3_BUCKET_NAME": "my-bucket"}, stdin="n\n")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in done.stdout and secret not in done.stderr
    assert "****" + secret[-4:] in done.stdout
    assert "s3_bucket                my-bucket" in done.stdout
    assert "num_epochs               2" in done.stdout
    # No terminal here: it refuses to start without --yes rather than guessing.
    assert done.returncode == 1 and "Pass --yes" in done.stderr
