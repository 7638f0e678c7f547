"""Training: `trainer` (the loop), `metrics`, `checkpoint` (save and load safely), `preview` (the
reconstruction grid) and `publish` (upload checkpoints, TensorBoard and logs, verified)."""
