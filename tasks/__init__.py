"""Thin Prefect tasks over the `pokevq` library: retries, names, artifacts; no training logic."""
