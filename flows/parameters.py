"""The flows' parameters, made from the configuration: one declaration for the CLI, flows, deployment and Python.

Prefect reads a flow's parameters from its signature (names, types, defaults: the run form in the
UI, `-p name=value`, validation) and their descriptions from its docstring. `config_parameters`
gives a `**options` flow the signature and the docstring of a configuration's options
(`TrainConfig`'s, `TokenizeConfig`'s), so a new option is declared once, in its section.

Flat parameters, not one pydantic model parameter per section: `prefect deployment run pokevq/train
-p num_epochs=5` stays one flag per option, and the deployments and runs that name today's parameters
keep working. The sections are how the code holds the options, not how a user names them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pokevq.config import Sectioned


def config_parameters(config: type[Sectioned]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give `fn(**options)` the configuration's options as its keyword parameters, typed and described."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        types = config.option_types()
        parameters = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=types[f.name],
                              default=inspect.Parameter.empty if f.metadata.get("required") else f.default)
            for _, f in config.option_fields()
        ]
        returns = inspect.signature(fn).return_annotation
        fn.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
        fn.__annotations__ = {**{p.name: p.annotation for p in parameters}, "return": returns}
        described = "".join(f"        {name}: {text}\n" for name, text in config.field_help().items())
        fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\n    Args:\n{described}"
        return fn

    return decorate
