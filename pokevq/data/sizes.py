"""Byte sizes as people write them: `128MB`, `64MiB`, `1G`, `500k` or a number of bytes."""

from __future__ import annotations

from pokevq.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str | int, what: str = "shard size") -> int:
    """Bytes of `text`; at least 1 KiB, else a `ConfigError` that names `what`."""
    if isinstance(text, int):
        value = text
    else:
        raw = str(text).strip().lower().replace(" ", "")
        number = raw.rstrip("kmgtib")
        unit = raw[len(number):]
        try:
            value = int(float(number) * _UNITS[unit])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{what} must look like 128MB, 64MiB or a number of bytes; got {text!r}") from exc
    if value < 1024:
        raise ConfigError(f"{what} must be at least 1 KiB; got {text!r}")
    return value
