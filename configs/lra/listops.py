r"""ListOps (LRA): nested MIN/MAX/MED/SM expressions, up to 2000 tokens, 10 classes.

    python run.py train --config configs/lra/listops.py:s4 --workdir runs/lra/listops_s4
    python run.py train --config configs/lra/listops.py:mamba,small \
        --workdir runs/lra-small/listops_mamba
    python run.py train --config configs/lra/listops.py:rwkv,smoke --workdir /tmp/smoke
    python run.py train --config configs/lra/listops.py:transformer --workdir runs/lra/listops_tf

The transformer recipe is the LRA paper's own (arch/lra_recipes.py: CLS token,
sinusoidal positions, Adam with the rsqrt schedule); the others use the S4 table.

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 59.60, S4D-LegS 60.47, RWKV 55.88, Transformer 36.37,
S5 62.15.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("listops", arg)
