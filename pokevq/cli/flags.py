"""Every command's option flags, generated from the configuration's sections: a new option is one field there."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from pokevq.config import Sectioned, flag_for
from pokevq.data.sizes import parse_size
from pokevq.errors import PokevqError

GROUP_TITLES = {"storage": "storage options (S3 and the local cache)", "run": "run options",
                "schedule": "schedule options", "data": "data options", "optim": "optimisation options",
                "distributed": "distributed options (torchrun's names)", "model": "model options",
                "tokenize": "tokenize options"}


def _byte_size(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return parse_size(text, name)
        except PokevqError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _nproc(text: str) -> int | str:
    """`--nproc-per-node 4` or `auto` (every visible GPU)."""
    text = text.strip()
    if text == "auto":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a positive integer or auto; got {text!r}")


def _value_type(field: dataclasses.Field, hint: Any) -> Callable[[str], Any]:
    """int, float or str from the field's annotation (`int | None` reads an int), unless it names a parser."""
    if field.metadata.get("parse") == "size":
        return _byte_size(field.name)
    if field.metadata.get("parse") == "nproc":
        return _nproc
    candidates = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return candidates[0] if candidates[0] in (int, float) else str


def add_options(parser: argparse.ArgumentParser, config: type[Sectioned]) -> None:
    """One flag per option `config` offers, with the field's help, default and section as its group."""
    groups: dict[str, Any] = {}
    types = config.option_types()
    for section, field in config.option_fields():
        if section not in groups:
            groups[section] = parser.add_argument_group(GROUP_TITLES.get(section, f"{section} options"))
        group, hint = groups[section], types[field.name]
        help_text = field.metadata.get("help", "")
        default = field.default
        if isinstance(default, bool) or (default is None and bool in typing.get_args(hint)):
            # True by default, or unset (None: decided by other options): both --flag and --no-flag.
            action = argparse.BooleanOptionalAction if default is not False else "store_true"
            group.add_argument(flag_for(field.name), dest=field.name, action=action, default=argparse.SUPPRESS,
                               help=help_text)
            continue
        required = bool(field.metadata.get("required"))
        shown = f" (default: {default})" if default is not None and not required and "default:" not in help_text \
            else ""
        group.add_argument(
            flag_for(field.name),
            dest=field.name,
            type=_value_type(field, hint),
            default=argparse.SUPPRESS,
            required=required,
            metavar=field.metadata.get("metavar") or field.name.split("_")[-1].upper(),
            help=help_text.replace("%", "%%") + shown,
        )
