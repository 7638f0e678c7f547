"""pokevq: train a VQ-VAE tokenizer on Game Boy frames stored in S3.

The library never imports Prefect; the `pokevq` flow in `flows/` runs it, and
`pokevq.cli` is the command line. Configure a run with `TrainConfig`.
"""

from pokevq.config import TrainConfig
from pokevq.errors import PokevqError

__version__ = "0.1.0"
__all__ = ["TrainConfig", "PokevqError", "__version__"]
