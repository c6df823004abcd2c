"""Zoology's recall-vs-state-size figure at CPU scale (Arora et al. 2023, "Zoology:
Measuring and improving recall in efficient language models", figure 2 / section 3).

MQAR accuracy of each architecture over model width (which sets its recurrent state) and
number of key-value pairs, with a learning-rate grid and two seeds; the table keeps the
best learning rate per (arch, width, pairs) by the mean over seeds (zoology keeps the best
run per model and state size) and plots accuracy against the recurrent state per layer.

    python run.py sweep --config configs/sweeps/mqar_state.py --config.workers=2
    python run.py table sweep runs/sweeps/mqar_state

Any registered architecture can join: `mqar_state.py:transformer,rwkv6,mamba2` picks the
archs (default: attention, RWKV, Mamba, S4D, AFT, as the issue and zoology compare).
"""

import ml_collections

from experiments.sweep import get_config as sweep_config

ARCHS = ("transformer", "rwkv", "mamba", "s4d", "aft_simple")


def get_config(arg=None):
    c = sweep_config()
    c.base = "configs/synthetic/mqar.py"
    c.grid.arch = tuple(arg.split(",")) if arg else ARCHS
    c.grid.model = ml_collections.ConfigDict({"d_model": (16, 32, 64)})
    c.grid.task = ml_collections.ConfigDict(
        {"options": ml_collections.ConfigDict({"num_kv_pairs": (4, 16)})}
    )
    # zoology sweeps np.logspace(-3, -1.5, 4); two of those points fit the CPU budget.
    c.grid.train = ml_collections.ConfigDict({"lr": (1e-3, 3e-3)})
    c.seeds = (0, 1)
    # Keys and values from a vocabulary larger than the sequence, as in zoology (8192
    # tokens there); length 64 is zoology's shortest training length.
    c.fixed.task = ml_collections.ConfigDict(
        {"options": ml_collections.ConfigDict({"vocab_size": 256, "seq_len": 64})}
    )
    c.fixed.train = ml_collections.ConfigDict(
        {"steps": 1500, "batch_size": 64, "warmup_steps": 100, "eval_every": 500}
    )
    c.fixed.model = ml_collections.ConfigDict({"n_layers": 2})
    c.table.x = ("state", "model.d_model")
    c.table.panel = "task.options.num_kv_pairs"
    return c
