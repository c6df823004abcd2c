r"""Retrieval (LRA): byte-level AAN citation pairs, 4000 bytes each, dual encoder.

    python run.py train --config configs/lra/retrieval.py:s4 --workdir runs/lra/retrieval_s4
    python run.py train --config configs/lra/retrieval.py:mamba,small \
        --workdir runs/lra-small/retrieval_mamba
    python run.py train --config configs/lra/retrieval.py:rwkv,smoke --workdir /tmp/smoke

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 90.90, S4D-LegS 89.46, RWKV 88.34, Transformer 57.46,
S5 91.40.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("retrieval", arg)
