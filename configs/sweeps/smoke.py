"""The smallest useful sweep (what CI runs): 2 archs x 2 widths x 2 seeds, seconds per run.

    python run.py sweep --config configs/sweeps/smoke.py --workdir runs/sweeps/smoke
    python run.py sweep --config configs/sweeps/smoke.py --config.workers=2
    python run.py sweep --config configs/sweeps/smoke.py --config.backend=ray
    python run.py table sweep runs/sweeps/smoke

Re-running the same command skips the finished runs and resumes the unfinished ones.
"""

import ml_collections

from experiments.sweep import get_config as sweep_config


def get_config():
    c = sweep_config()
    c.base = "configs/synthetic/mqar.py:,smoke"  # a few steps at width 32, one layer
    c.grid.arch = ("rwkv", "mamba")
    c.grid.model = ml_collections.ConfigDict({"d_model": (8, 16)})
    c.seeds = (0, 1)
    c.fixed.train = ml_collections.ConfigDict({"steps": 3, "eval_every": 3, "batch_size": 8})
    c.table.x = ("model.d_model", "state")
    return c
