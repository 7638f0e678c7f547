"""Synthetic Game Boy frames, so the pipeline can be tried with no real data (`generate`)."""
