"""pokevq: train a VQ-VAE tokenizer on Game Boy frames stored in S3.

The library never imports Prefect; the `pokevq` flow in `flows/` runs it, and
`pokevq.cli` is the command line. Configure a run with `TrainConfig`.
"""

import importlib
from typing import Any

from pokevq.config import TrainConfig
from pokevq.errors import PokevqError
from pokevq.version import __version__

__all__ = ["TrainConfig", "PokevqError", "Tokenizer", "__version__"]


def __getattr__(name: str) -> Any:
    """`from pokevq import Tokenizer` without importing torch for every `import pokevq`."""
    if name == "Tokenizer":  # imported on first use (torch is heavy); the tokenizer imports nothing from here
        return importlib.import_module("pokevq.tokenizer.model").Tokenizer
    raise AttributeError(f"module 'pokevq' has no attribute {name!r}")
