r"""Path-X (LRA): Pathfinder at 128x128 = 16384 pixels, 2 classes.

    python run.py train --config configs/lra/pathx.py:s4 --workdir runs/lra/pathx_s4
    python run.py train --config configs/lra/pathx.py:mamba,small \
        --workdir runs/lra-small/pathx_mamba
    python run.py train --config configs/lra/pathx.py:rwkv,smoke --workdir /tmp/smoke

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 96.35, S4D-LegS 91.95, RWKV fail, Transformer fail,
S5 98.58.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("pathx", arg)
