"""The configuration by concern: each section checks itself once, the flat names stay the user's face,
and every command and flow takes its options from the same declarations."""

from __future__ import annotations

import inspect

import pytest

from pokevq.cli.main import build_parser
from pokevq.config import (
    BucketConfig,
    BucketReadConfig,
    ModelOptions,
    StorageOptions,
    TrainConfig,
)
from pokevq.errors import ConfigError
from pokevq.model.vqvae import ModelConfig
from pokevq.tokenizer.options import TokenizeConfig


def test_options_live_in_sections_and_read_by_their_flat_names(monkeypatch):
    monkeypatch.delenv("S3_BUCKET_NAME", raising=False)
    config = TrainConfig(use_s3=True, s3_bucket="frames", num_epochs=3, learning_rate=0.5, codebook_size=512,
                         nproc_per_node="2", experiment_name="sections")
    assert (config.storage.s3_bucket, config.schedule.num_epochs, config.optim.learning_rate) == ("frames", 3, 0.5)
    assert (config.model.codebook_size, config.distributed.nproc_per_node, config.run.experiment_name) == (
        512, 2, "sections")
    assert (config.s3_bucket, config.num_epochs, config.codebook_size) == ("frames", 3, 512)  # the guide's API
    flat = config.to_dict()
    assert flat["num_epochs"] == 3 and "schedule" not in flat  # checkpoints and flow parameters stay flat
    assert TrainConfig.from_dict(flat) == config
    assert config.replace(num_epochs=4).schedule.num_epochs == 4 and config.schedule.num_epochs == 3
    with pytest.raises(AttributeError, match="replace"):
        config.num_epochs = 9  # a change goes through replace(), which checks it again
    with pytest.raises(ConfigError, match="unknown option.*num_epoch"):
        TrainConfig(num_epoch=3)


def test_every_option_belongs_to_exactly_one_section():
    names = [field.name for _, field in TrainConfig.option_fields()]
    assert len(names) == len(set(names)) >= 50
    assert {section for section, _ in TrainConfig.option_fields()} == set(TrainConfig.SECTIONS)


def test_a_section_refuses_a_bad_value_when_it_is_made_naming_the_flag():
    with pytest.raises(ConfigError, match=r"s3_kms_key_id \(--s3-kms-key-id\) is only used with --s3-sse aws:kms"):
        StorageOptions(s3_kms_key_id="alias/k")
    with pytest.raises(ConfigError, match=r"local_cache_dir|max_cache_size \(--max-cache-size\)"):
        StorageOptions(max_cache_size=0)


@pytest.mark.parametrize("name, value", [("downsample", 5), ("encoder_kernel", 2), ("quantizer", "pq"),
                                         ("num_res_blocks", -1), ("codebook_size", 0)])
def test_the_model_rules_are_one_set_for_the_run_and_for_the_model(name, value):
    """The run's options and ModelConfig refuse the same values with the same words (check_model)."""
    with pytest.raises(ConfigError) as from_run:
        ModelOptions(**{name: value})
    with pytest.raises(ConfigError) as from_model:
        ModelConfig(**{**ModelOptions().model_options(), name: value})
    assert str(from_run.value) == str(from_model.value).replace(name, f"{name} (--{name.replace('_', '-')})", 1)


def test_cosine_codes_is_named_by_its_flag_though_the_model_calls_it_cosine():
    options = ModelOptions(cosine_codes=True)
    assert options.model_options()["cosine"] is True and ModelConfig(**options.model_options()).cosine


def _command(name: str):
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command, config", [("upload", BucketConfig), ("pack", BucketConfig),
                                             ("decode", BucketReadConfig), ("export", BucketReadConfig),
                                             ("tokenize", TokenizeConfig)])
def test_every_bucket_command_takes_its_options_from_the_storage_section(command, config):
    actions = {action.dest: action for action in _command(command)._actions}
    train = {action.dest: action for action in _command("train")._actions}
    for section, field in config.option_fields():
        assert field.name in actions, (command, field.name)
        if section == "storage":  # the same flag and help as train's: one declaration
            assert actions[field.name].option_strings == train[field.name].option_strings
            assert actions[field.name].help == train[field.name].help
    assert "expected_bucket_owner" in actions


def test_a_writing_command_checks_encryption_as_train_does():
    with pytest.raises(ConfigError, match=r"s3_sse \(--s3-sse\) must be one of AES256, aws:kms"):
        BucketConfig(s3_bucket="b", s3_sse="rot13")
    assert BucketConfig(s3_bucket="b").storage.use_s3  # upload and pack always write to the bucket


def test_the_tokenize_flow_parameters_are_its_configuration():
    from flows.tokenize_flow import pokevq_tokenize

    signature = inspect.signature(pokevq_tokenize.fn)
    assert list(signature.parameters) == [field.name for _, field in TokenizeConfig.option_fields()]
    assert signature.parameters["checkpoint"].default is inspect.Parameter.empty  # still required
    assert signature.parameters["batch_size"].default == 64
    config = TokenizeConfig(checkpoint="c.pt", batch_size=8)
    assert config.storage.no_fallback  # tokens written to a worker's disk would be lost
    with pytest.raises(ConfigError, match="unknown option.*s3_logs_prefix"):
        TokenizeConfig(checkpoint="c.pt", s3_logs_prefix="x")  # a storage option tokenize does not offer
