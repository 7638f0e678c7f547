"""TrainConfig: the guide's defaults, environment resolution, validation messages, resume URIs."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from pokevq.config import TrainConfig, default_experiment_name, flag_for
from pokevq.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch):
    """No bucket, endpoint or region in the environment unless a test sets one."""
    for name in ("S3_BUCKET_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- the guide's defaults ------------------------------------------------------------


def test_guide_defaults(clean_env):
    config = TrainConfig()
    assert config.use_s3 is False
    assert config.s3_bucket is None
    assert config.s3_region == "us-east-1"
    assert config.s3_endpoint_url is None
    assert config.s3_checkpoint_prefix == "checkpoints"
    assert config.s3_tensorboard_prefix == "tensorboard"
    assert config.s3_logs_prefix == "logs"
    assert config.local_cache_dir is None
    assert config.max_cache_size == 1000
    assert config.frames_dir == "pokemon_frames"
    assert config.batch_size == 16
    assert config.num_epochs == 50
    assert config.learning_rate == pytest.approx(1e-4)
    assert config.image_size == "144x160"
    assert config.model.image_hw == (144, 160)
    assert config.codebook_size == 65536  # pokevq's own default (16 bits per token); the guide names none


def test_auto_experiment_name_is_timestamped(clean_env):
    before = datetime.now().replace(microsecond=0)
    name = TrainConfig().experiment_name
    after = datetime.now()
    assert re.fullmatch(r"pokevq-\d{8}-\d{6}", name), name
    stamp = datetime.strptime(name, "pokevq-%Y%m%d-%H%M%S")
    assert before <= stamp <= after


def test_default_experiment_name_format():
    assert default_experiment_name(datetime(2026, 11, 26, 3, 15, 0)) == "pokevq-20261126-031500"


def test_explicit_experiment_name_is_kept(clean_env):
    assert TrainConfig(experiment_name="my_s3_experiment").experiment_name == "my_s3_experiment"


# --- environment ----------------------------------------------------------------------


def test_environment_fills_bucket_region_endpoint(clean_env):
    clean_env.setenv("S3_BUCKET_NAME", "env-bucket")
    clean_env.setenv("AWS_REGION", "eu-west-3")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://generic.example:9000")
    config = TrainConfig(use_s3=True)
    assert config.s3_bucket == "env-bucket"
    assert config.s3_region == "eu-west-3"
    assert config.s3_endpoint_url == "http://generic.example:9000"


def test_s3_specific_endpoint_beats_generic_endpoint(clean_env):
    clean_env.setenv("AWS_ENDPOINT_URL", "http://generic.example:9000")
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only.example:9000")
    assert TrainConfig().s3_endpoint_url == "http://s3-only.example:9000"


def test_region_defaults_to_us_east_1_without_env(clean_env):
    assert TrainConfig().s3_region == "us-east-1"


def test_explicit_values_beat_environment(clean_env):
    clean_env.setenv("S3_BUCKET_NAME", "env-bucket")
    clean_env.setenv("AWS_REGION", "eu-west-3")
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://env.example:9000")
    config = TrainConfig(
        use_s3=True, s3_bucket="cli-bucket", s3_region="ap-south-1", s3_endpoint_url="http://cli.example:1"
    )
    assert config.s3_bucket == "cli-bucket"
    assert config.s3_region == "ap-south-1"
    assert config.s3_endpoint_url == "http://cli.example:1"


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "flag"),
    [
        ({"batch_size": 0}, "batch_size", "--batch-size"),
        ({"num_epochs": -1}, "num_epochs", "--epochs"),
        ({"learning_rate": 0}, "learning_rate", "--learning-rate"),
        ({"learning_rate": -1.0}, "learning_rate", "--learning-rate"),
        ({"downsample": 3}, "downsample", "--downsample"),
        ({"image_size": "144by160"}, "image_size", "--image-size"),
        ({"image_size": "0x0"}, "image_size", "--image-size"),
        ({"image_size": "145x160", "downsample": 8}, "image_size", "--image-size"),
        ({"val_fraction": 1.0}, "val_fraction", "--val-fraction"),
        ({"experiment_name": "../x"}, "experiment_name", "--experiment-name"),
    ],
)
def test_invalid_values_name_field_and_flag(clean_env, changes, field, flag):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes)
    message = str(info.value)
    assert field in message
    assert flag in message


def test_not_divisible_image_size_explains_the_downsample(clean_env):
    with pytest.raises(ConfigError, match="divisible by downsample 8"):
        TrainConfig(image_size="145x160", downsample=8)


def test_valid_edge_values_are_accepted(clean_env):
    config = TrainConfig(num_epochs=0, val_fraction=0.0, image_size="72 x 80", downsample=8, batch_size=1)
    assert config.num_epochs == 0
    assert config.image_size == "72x80"
    assert config.model.image_hw == (72, 80)


def test_flag_for_uses_cli_names():
    assert flag_for("num_epochs") == "--epochs"
    assert flag_for("local_cache_dir") == "--cache-dir"
    assert flag_for("batch_size") == "--batch-size"


def test_from_dict_refuses_unknown_keys(clean_env):
    with pytest.raises(ConfigError, match="batch_szie"):
        TrainConfig.from_dict({"batch_szie": 4})


def test_from_dict_round_trips_to_dict(clean_env):
    config = TrainConfig(experiment_name="exp", batch_size=4, use_s3=True, s3_bucket="b")
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_from_dict_still_validates(clean_env):
    with pytest.raises(ConfigError, match="--batch-size"):
        TrainConfig.from_dict({"batch_size": -3})


# --- resume ---------------------------------------------------------------------------


def test_resume_uri_gives_experiment_and_bucket(clean_env):
    config = TrainConfig(use_s3=True, resume="s3://b/checkpoints/exp1/checkpoint_latest.pt")
    assert config.experiment_name == "exp1"
    assert config.s3_bucket == "b"


def test_resume_bucket_not_used_without_s3(clean_env):
    config = TrainConfig(resume="s3://b/checkpoints/exp1/checkpoint_latest.pt")
    assert config.experiment_name == "exp1"
    assert config.s3_bucket is None


def test_resume_does_not_override_explicit_choices(clean_env):
    config = TrainConfig(
        use_s3=True,
        s3_bucket="mine",
        experiment_name="fresh",
        resume="s3://b/checkpoints/exp1/checkpoint_latest.pt",
    )
    assert config.s3_bucket == "mine"
    assert config.experiment_name == "fresh"


def test_resume_env_bucket_beats_resume_bucket(clean_env):
    clean_env.setenv("S3_BUCKET_NAME", "env-bucket")
    config = TrainConfig(use_s3=True, resume="s3://b/checkpoints/exp1/checkpoint_latest.pt")
    assert config.s3_bucket == "env-bucket"


def test_resume_local_path_gives_experiment(clean_env, tmp_path):
    path = tmp_path / "outputs" / "checkpoints" / "exp7" / "checkpoint_best.pt"
    assert TrainConfig(resume=str(path)).experiment_name == "exp7"


def test_resume_outside_checkpoint_layout_gets_auto_name(clean_env):
    name = TrainConfig(resume="s3://b/elsewhere/model.pt").experiment_name
    assert re.fullmatch(r"pokevq-\d{8}-\d{6}", name)


# --- secrets ----------------------------------------------------------------------------


def test_secrets_never_appear_in_dicts(clean_env):
    secret = "very-secret-value-xyz123"
    key_id = "AKIAEXAMPLEKEYID9876"
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", secret)
    clean_env.setenv("AWS_ACCESS_KEY_ID", key_id)
    clean_env.setenv("AWS_SESSION_TOKEN", "session-token-abc")
    config = TrainConfig(use_s3=True, s3_bucket="b")
    for shown in (config.to_dict(), config.masked()):
        text = json.dumps(shown)
        assert secret not in text
        assert key_id not in text
        assert "session-token-abc" not in text
    assert config.masked()["s3_bucket"] == "b"


# --- model options ---------------------------------------------------------------------


def test_model_option_defaults_are_the_benchmarked_best(clean_env):
    config = TrainConfig()
    assert (config.architecture, config.quantizer, config.codebook_init, config.dead_code_restart) == (
        "patch", "ema", "kmeans", "worst"
    )
    assert config.code_dim == 0 and config.cosine_codes is False and config.downsample == 8


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(architecture="vit"), "architecture (--architecture) must be one of tile, conv, patch; got 'vit'"),
        (dict(quantizer="rvq"), "quantizer (--quantizer) must be one of ema, vq, fsq; got 'rvq'"),
        (dict(codebook_init="zeros"), "codebook_init (--codebook-init) must be one of kmeans, data, random"),
        (dict(dead_code_restart="always"), "dead_code_restart (--dead-code-restart) must be one of worst, random, off"),
        (dict(code_dim=-1), "code_dim (--code-dim) must be an integer >= 0"),
        (dict(quantizer="fsq", codebook_size=511), "codebook_size (--codebook-size) 511 cannot be an FSQ codebook"),
        (dict(encoder_kernel=5), "encoder_kernel (--encoder-kernel) must be 1 or 3; got 5"),
        (dict(num_res_blocks=-1), "num_res_blocks (--num-res-blocks) must be an integer >= 0; got -1"),
        (dict(lr_schedule="linear"), "lr_schedule (--lr-schedule) must be one of constant, cosine; got 'linear'"),
        (dict(warmup_steps=-1), "warmup_steps (--warmup-steps) must be an integer >= 0 (0: no warm-up)"),
    ],
)
def test_bad_model_options_name_the_flag(clean_env, options, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**options)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_model_options_reach_the_model(clean_env):
    from pokevq.model.vqvae import ModelConfig

    config = TrainConfig(architecture="conv", quantizer="vq", codebook_init="data", dead_code_restart="off",
                         code_dim=8, cosine_codes=True, codebook_size=216)
    model = ModelConfig.for_run(config)
    assert (model.architecture, model.quantizer, model.codebook_init, model.dead_code_restart) == (
        "conv", "vq", "data", "off"
    )
    assert model.code_dim == 8 and model.cosine is True and model.codebook_size == 216
    assert TrainConfig(quantizer="fsq", codebook_size=216).quantizer == "fsq"  # 6 x 6 x 6
    assert ModelConfig.for_run(TrainConfig(encoder_kernel=3)).encoder_kernel == 3


def test_a_model_option_declared_once_reaches_the_flag_the_flow_and_the_model(clean_env):
    """`num_res_blocks` is declared in its section alone (pokevq/config/model.py): the CLI, the flow's parameters and
    the model follow."""
    import inspect

    from flows import pokevq
    from pokevq.cli.main import build_parser
    from pokevq.model.vqvae import ModelConfig

    args = build_parser().parse_args(["train", "--num-res-blocks", "0"])
    assert args.num_res_blocks == 0
    assert inspect.signature(pokevq.fn).parameters["num_res_blocks"].default == 2
    assert pokevq.validate_parameters({"num_res_blocks": "1"})["num_res_blocks"] == 1
    assert ModelConfig.for_run(TrainConfig(num_res_blocks=0)).num_res_blocks == 0
