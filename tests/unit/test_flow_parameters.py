"""The flow's parameters are the TrainConfig fields: same names, same defaults, typed."""

from __future__ import annotations

import inspect

from flows import pokevq
from pokevq import TrainConfig


def test_flow_parameters_mirror_train_config():
    signature = inspect.signature(pokevq.fn)
    fields = {f.name: f.default for _, f in TrainConfig.option_fields()}
    assert list(signature.parameters) == list(fields)
    for name, parameter in signature.parameters.items():
        assert parameter.default == fields[name], name
        assert parameter.annotation is not inspect.Parameter.empty, name


def test_flow_parameter_schema_is_typed_for_the_run_form():
    schema = pokevq.parameters.model_dump()
    properties = schema["properties"]
    assert properties["num_epochs"]["type"] == "integer"
    assert properties["learning_rate"]["type"] == "number"
    assert properties["use_s3"]["type"] == "boolean"
    assert properties["image_size"]["default"] == "144x160"


def test_every_parameter_is_described_as_in_the_cli_help():
    properties = pokevq.parameters.model_dump()["properties"]
    for name, text in TrainConfig.field_help().items():
        assert " ".join(properties[name].get("description", "").split()) == text, name


def test_todays_deployment_and_run_parameters_are_accepted_and_typed():
    """A deployment or a run that names today's parameters keeps working: validated as Prefect validates a run."""
    from pathlib import Path

    import pytest
    import yaml
    from prefect.exceptions import SignatureMismatchError

    root = Path(__file__).resolve().parents[2]
    deployments = yaml.safe_load((root / "deployments" / "prefect.yaml").read_text())["deployments"]
    train = next(d for d in deployments if d["entrypoint"].endswith(":pokevq"))
    given = {**train.get("parameters", {}), "num_epochs": "5", "batch_size": 8, "hidden_channels": "32",
             "nightly": True, "learning_rate": "3e-4", "max_cache_bytes": None}
    validated = pokevq.validate_parameters(given)
    assert validated["use_s3"] is True and validated["num_epochs"] == 5 and validated["hidden_channels"] == 32
    assert validated["learning_rate"] == 3e-4
    with pytest.raises(SignatureMismatchError, match="num_epoch"):
        pokevq.validate_parameters({"num_epoch": 5})  # a misspelt name is refused, never ignored
