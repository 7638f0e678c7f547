"""How an option is declared once and offered everywhere: its field, its flag, its section.

An option is a dataclass field made by `option()` in one section (storage, data, model, ...).
A `Sectioned` configuration (`TrainConfig`, `TokenizeConfig`) is built from the options' flat
names, the guide's (`TrainConfig(use_s3=True, num_epochs=5)`), and holds the sections by concern
(`config.storage.s3_bucket`, `config.schedule.num_epochs`). The CLI flags and the flows'
parameters are generated from `option_fields()`, so a new option is one field.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Iterator
from dataclasses import Field, field, fields
from typing import Any, ClassVar, NoReturn

from pokevq.errors import ConfigError

_FLAGS: dict[str, str] = {}  # option name -> its flag where it is not --the-name


def option(default: Any, help: str, *, model: str | None = None, flag: str | None = None,
           parse: str | None = None, metavar: str | None = None, required: bool = False) -> Any:
    """A section's field with what the CLI, the flows' docs and `ModelConfig` read from it.

    A model option names its `ModelConfig` field (`model`, default: the same name). `flag` overrides
    the flag's name, `parse="size"` reads byte sizes such as 20GB, `metavar` names the value in the help;
    a `required` option has no default to offer (its field's default stands for "not given").
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "metavar": metavar, "model": model,
                "required": required}
    return field(default=default, metadata=metadata)


def flag_for(name: str) -> str:
    """The CLI flag of an option, so error messages name what the user typed."""
    return _FLAGS.get(name) or "--" + name.replace("_", "-")


def fail(name: str, message: str) -> NoReturn:
    """One line naming the option and its flag: `batch_size (--batch-size) must be ...`."""
    raise ConfigError(f"{name} ({flag_for(name)}) {message}")


def whole(value: Any, low: int) -> bool:
    """An int (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def section(cls: type) -> type:
    """Register a section's flag overrides, so `flag_for` knows them before any config is built."""
    for f in fields(cls):
        flag = f.metadata.get("flag")
        if flag:
            if _FLAGS.setdefault(f.name, flag) != flag:
                raise AssertionError(f"option {f.name} has two flags: {_FLAGS[f.name]} and {flag}")
    return cls


class Sectioned:
    """A configuration of sections, made and shown by the options' flat names.

    `SECTIONS` maps each attribute to its section class and the names of that section this
    configuration offers (None: all). Names not offered keep the section's defaults, or `FIXED`.
    """

    SECTIONS: ClassVar[dict[str, tuple[type, tuple[str, ...] | None]]] = {}
    FIXED: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        owners = self.owners()
        unknown = sorted(set(options) - set(owners))
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        options = self.prepare(dict(options))
        for attr, (cls, _) in self.SECTIONS.items():
            names = {f.name for f in fields(cls)}
            given = {k: v for k, v in {**self.FIXED, **options}.items() if k in names}
            object.__setattr__(self, attr, cls(**given))

    def prepare(self, options: dict[str, Any]) -> dict[str, Any]:
        """What a configuration fills in from other options before its sections are made (`TrainConfig`: resume)."""
        return options

    # ---- the flat face
    @classmethod
    def owners(cls) -> dict[str, str]:
        """Every offered option name -> the attribute of its section."""
        return _owners(cls)

    @classmethod
    def option_fields(cls) -> Iterator[tuple[str, Field]]:
        """(section attribute, field) of every offered option, in declaration order."""
        for attr, (section_cls, offered) in cls.SECTIONS.items():
            for f in fields(section_cls):
                if offered is None or f.name in offered:
                    yield attr, f

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Each offered option's type, read from its section's annotations."""
        hints: dict[str, Any] = {}
        for section_cls, _ in cls.SECTIONS.values():
            hints.update(typing.get_type_hints(section_cls))
        return {f.name: hints[f.name] for _, f in cls.option_fields()}

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each option's help, shared by the CLI and the flows' parameter docs."""
        return {f.name: f.metadata.get("help", "") for _, f in cls.option_fields()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from flat option names, refusing unknown ones so a typo is not silently ignored."""
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values by flat name: what checkpoints, reports and flow parameters hold."""
        return {f.name: getattr(getattr(self, attr), f.name) for attr, f in self.option_fields()}

    def replace(self, **changes: Any) -> Any:
        return type(self)(**{**self.to_dict(), **changes})

    def masked(self) -> dict[str, Any]:
        """The options as shown to people: no secret ever appears in them."""
        return {name: "****" if re.search(r"secret|password|token", name) else value
                for name, value in self.to_dict().items()}

    def __getattr__(self, name: str) -> Any:
        # Reading an option by its flat name (`config.num_epochs`), as the guide's Python API does.
        owner = type(self).owners().get(name)
        if owner is None or owner not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        return getattr(self.__dict__[owner], name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is built once: use .replace({name}=...)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.to_dict().items())))

    def __repr__(self) -> str:
        shown = ", ".join(f"{attr}={getattr(self, attr)!r}" for attr in self.SECTIONS)
        return f"{type(self).__name__}({shown})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@functools.cache
def _owners(cls: type[Sectioned]) -> dict[str, str]:
    return {f.name: attr for attr, f in cls.option_fields()}


def settle(obj: Any, name: str, value: Any) -> None:
    """Store a value a frozen section normalised while checking it (`144X160` -> `144x160`)."""
    object.__setattr__(obj, name, value)
