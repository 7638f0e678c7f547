"""pokevq's benchmarks: `python -m benchmarks.run` from the repository root (see benchmarks/run.py)."""
