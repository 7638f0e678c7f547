"""The `pokevq` command: the edge that runs the flows, the stack and the demo.

The only part of `pokevq` that may reach up to `flows/` and `deployments/`; the library
below it never imports Prefect.
"""

from pokevq.cli.main import build_parser, config_from_args, main

__all__ = ["build_parser", "config_from_args", "main"]
