"""One training run around the trainer: `validate` (set-up and fallback), `resume`, `lease` (one run per
experiment), `session` (the run's live state), `logs` and `report`."""
