"""Configuration in one place: the POKEVQ_* knobs, CLI flags generated from TrainConfig, the model derived from it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pokevq import settings
from pokevq.cli import build_parser
from pokevq.config import TrainConfig, flag_for
from pokevq.errors import ConfigError
from pokevq.model.vqvae import ModelConfig
from pokevq.run.logs import CONSOLE, ConsoleFilter

KNOBS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"  # the README links it


@pytest.mark.parametrize(
    ("knob", "bad", "what"),
    [
        (settings.S3_MAX_ATTEMPTS, "0", "an integer from 1 to 50"),
        (settings.LEASE_TTL, "soon", "a number of seconds >= 1"),
        (settings.TASK_RETRY_DELAYS, "2,-1", "comma-separated seconds >= 0"),
        (settings.ZOMBIE_SECONDS, "30", "an integer from 35 to 86400"),  # not above the heartbeat interval
    ],
)
def test_a_bad_knob_names_itself_what_it_must_be_and_its_value(monkeypatch, knob, bad, what):
    monkeypatch.setenv(knob.name, bad)
    with pytest.raises(ConfigError) as info:
        knob.value()
    message = str(info.value)
    assert message.startswith(f"{knob.name} must be ") and what in message and repr(bad) in message


def test_knobs_read_the_environment_when_used(monkeypatch):
    for knob in settings.KNOBS:
        monkeypatch.delenv(knob.name, raising=False)
    assert (settings.s3_max_attempts(), settings.lease_ttl(), settings.task_retry_delays()) == (8, 600.0, [2, 4, 8])
    monkeypatch.setenv("POKEVQ_S3_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "")  # empty: no retries, not the default
    assert settings.s3_max_attempts() == 3
    assert settings.task_retry_delays() == []


def test_every_knob_is_documented():
    text = KNOBS_PAGE.read_text(encoding="utf-8")
    assert [knob.name for knob in settings.KNOBS if f"`{knob.name}" not in text] == []


def test_every_config_field_is_a_train_flag_with_its_type():
    parser = build_parser()
    train = next(action for action in parser._subparsers._group_actions[0].choices.values() if action.prog.endswith(
        "train"))
    dests = {action.dest for action in train._actions if action.dest != "help"}
    assert dests == {field.name for _, field in TrainConfig.option_fields()}
    args = parser.parse_args(["train", "--epochs", "3", "--max-cache-bytes", "20GB", "--learning-rate", "0.5",
                              "--cache-dir", "/tmp/c", "--cosine-codes"])
    assert (args.num_epochs, args.max_cache_bytes, args.learning_rate, args.local_cache_dir, args.cosine_codes) == (
        3, 20_000_000_000, 0.5, "/tmp/c", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--batch-size", "many"])
    assert flag_for("num_epochs") == "--epochs" and flag_for("data_path") == "--data-path"


def test_the_model_is_derived_from_every_model_option():
    base = TrainConfig(experiment_name="derive")
    model_fields = [f for section, f in TrainConfig.option_fields() if section == "model"]
    assert len(model_fields) >= 10
    changed = {"image_size": "64x80", "hidden_channels": 32, "codebook_size": 64, "embedding_dim": 16,
               "downsample": 16, "architecture": "conv", "quantizer": "vq", "codebook_init": "random",
               "dead_code_restart": "off", "code_dim": 8, "cosine_codes": True, "encoder_kernel": 3,
               "num_res_blocks": 0}
    for field in model_fields:  # each model option reaches ModelConfig on its own
        assert ModelConfig.for_run(base.replace(**{field.name: changed[field.name]})) != ModelConfig.for_run(base), (
            field.name)


def test_console_filter_keeps_marked_lines_and_warnings_only():
    keep = ConsoleFilter()

    def record(level: int, msg: str, name: str = "x", **extra) -> logging.LogRecord:
        made = logging.LogRecord(name, level, __file__, 1, msg, None, None)
        made.__dict__.update(extra)
        return made

    assert keep.filter(record(logging.INFO, "Epoch 1/2: ...", **CONSOLE))
    assert not keep.filter(record(logging.INFO, "Finished in state Completed()"))
    assert keep.filter(record(logging.WARNING, "S3 set-up failed, so this run FALLS BACK TO LOCAL STORAGE"))
    assert not keep.filter(record(logging.WARNING, "Still processing items: 3 items remaining..."))
    assert keep.filter(record(logging.ERROR, "Task run failed"))
    # An event the UI misses as a failing run shuts down (with a traceback) is the orchestrator's, not the user's.
    assert not keep.filter(record(logging.ERROR, "Error emitting event: prefect.task-run.Pending",
                                  name="prefect.events.utilities"))
