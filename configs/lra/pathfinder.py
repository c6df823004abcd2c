r"""Pathfinder (LRA): are the two dots connected? 32x32 = 1024 pixels, 2 classes.

    python run.py train --config configs/lra/pathfinder.py:s4 --workdir runs/lra/pathfinder_s4
    python run.py train --config configs/lra/pathfinder.py:mamba,small \
        --workdir runs/lra-small/pathfinder_mamba
    python run.py train --config configs/lra/pathfinder.py:rwkv,smoke --workdir /tmp/smoke

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 94.20, S4D-LegS 93.06, RWKV 58.42, Transformer 71.40,
S5 95.33.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("pathfinder", arg)
