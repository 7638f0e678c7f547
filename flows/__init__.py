"""Prefect flows of pokevq. `train(config)` runs the `pokevq` flow from Python."""

from flows.pokevq_flow import pokevq, train

__all__ = ["pokevq", "train"]
