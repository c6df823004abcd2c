"""Tasks: each yields numpy batches that are a pure function of (seed, split, step)."""
