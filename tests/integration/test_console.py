"""The console of a normal `pokevq train`: the run's own lines, not the orchestrator's chatter (kept in the log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_train_console_shows_epochs_and_report_and_the_log_keeps_the_rest(tmp_path, synth_frames):
    # An option and a knob of the two data paths before: each accepted, with one line saying it is not used.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200",
           "POKEVQ_DECODED_CACHE_BYTES": "0"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "pokevq", "train", "--frames-dir", str(synth_frames), "--output-dir",
               str(tmp_path / "out"), "--experiment-name", "console", "--epochs", "2", "--batch-size", "4",
               "--num-workers", "0", "--image-size", "72x80", "--hidden-channels", "8", "--embedding-dim", "4",
               "--codebook-size", "16", "--learning-rate", "0.001", "--data-path", "cached"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]

    assert "Training console from epoch 1 to 2" in console
    assert "Epoch 1/2: train loss" in console and "Epoch 2/2: train loss" in console
    assert "Report written to" in console
    deprecated = [line for line in console.splitlines() if "is deprecated and ignored" in line
                  or "is no longer used" in line]
    assert len(deprecated) == 2, deprecated
    assert "--data-path cached" in deprecated[0] or "--data-path cached" in deprecated[1]
    assert any("POKEVQ_DECODED_CACHE_BYTES" in line and "--max-cache-bytes" in line for line in deprecated)
    for chatter in ("Finished in state", "Beginning flow run", "Starting temporary server", "EventsWorker"):
        assert chatter not in console, chatter

    log = (Path(tmp_path / "out") / "runs" / "console" / "training.log").read_text(encoding="utf-8")
    assert "Finished in state Completed()" in log  # the task states moved here, not lost
    assert "Epoch 2/2: train loss" in log


def test_a_temporary_server_that_never_starts_is_one_error_line_naming_the_fixes(tmp_path, synth_frames):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"}  # the user's own wait wins; 0 never connects
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "pokevq", "train", "--frames-dir", str(synth_frames), "--output-dir",
               str(tmp_path / "out"), "--experiment-name", "noserver", "--epochs", "1", "--num-workers", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "did not start within 0 s" in errors[0]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in errors[0] and "PREFECT_API_URL" in errors[0]
