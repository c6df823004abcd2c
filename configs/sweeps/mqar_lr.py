"""The learning-rate sweep behind `python run.py`'s per-architecture learning rates.

zoology tunes the learning rate per model (its figure-2 sweep: np.logspace(-3, -1.5, 4),
i.e. 1e-3 .. 3.2e-2) and keeps the best; `configs/synthetic/mqar.py` takes each family's
best rate from this sweep of the default job itself (same task, width, steps), by the
mean over two seeds. The grid starts one step lower than zoology's because attention
is best at the low end here.

    python run.py sweep --config configs/sweeps/mqar_lr.py --config.workers=2
    python run.py table sweep runs/sweeps/mqar_lr
"""

import ml_collections

from experiments.sweep import get_config as sweep_config

ARCHS = ("transformer", "aft_simple", "rwkv", "s4d", "mamba", "hawk")


def get_config(arg=None):
    c = sweep_config()
    c.base = "configs/synthetic/mqar.py"
    c.grid.arch = tuple(arg.split(",")) if arg else ARCHS
    c.grid.train = ml_collections.ConfigDict({"lr": (3e-4, 1e-3, 3e-3, 1e-2)})
    c.seeds = (0, 1)
    c.table.x = ("train.lr",)
    c.table.select = ()  # show every learning rate: this sweep exists to compare them
    return c
