"""The flow's parameters are the TrainConfig fields: same names, same defaults, typed."""

from __future__ import annotations

import dataclasses
import inspect

from flows import pokevq
from pokevq import TrainConfig


def test_flow_parameters_mirror_train_config():
    signature = inspect.signature(pokevq.fn)
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
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
    from pokevq.config import field_help

    properties = pokevq.parameters.model_dump()["properties"]
    for name, text in field_help().items():
        assert " ".join(properties[name].get("description", "").split()) == text, name
