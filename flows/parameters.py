"""The flow's parameters, made from `TrainConfig`: one declaration for the CLI, the flow, the deployment and Python.

Prefect reads a flow's parameters from its signature (names, types, defaults: the run form in the
UI, `-p name=value`, validation) and their descriptions from its docstring. `config_parameters`
gives a `**options` flow the signature and the docstring of `TrainConfig`'s fields, so a new option
is declared once, in `pokevq/config.py`.

Flat parameters, not one pydantic model parameter: `prefect deployment run pokevq/train -p num_epochs=5`
stays one flag per option, and the deployments and runs that name today's parameters keep working.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from pokevq.config import TrainConfig, field_help


def config_parameters(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(**options)` with TrainConfig's fields as its keyword parameters, typed and described."""
    hints = typing.get_type_hints(TrainConfig)
    parameters = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                    annotation=hints[f.name]) for f in fields(TrainConfig)]
    returns = inspect.signature(fn).return_annotation
    fn.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    fn.__annotations__ = {**{p.name: p.annotation for p in parameters}, "return": returns}
    described = "".join(f"        {name}: {text}\n" for name, text in field_help().items())
    fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\n    Args:\n{described}"
    return fn
