r"""Text (LRA): byte-level IMDB sentiment, 4096 bytes, 2 classes (tfds imdb_reviews).

    python run.py train --config configs/lra/text.py:s4 --workdir runs/lra/text_s4
    python run.py train --config configs/lra/text.py:mamba,small \
        --workdir runs/lra-small/text_mamba
    python run.py train --config configs/lra/text.py:rwkv,smoke --workdir /tmp/smoke

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 86.82, S4D-LegS 86.18, RWKV 86.04, Transformer 64.27,
S5 89.31.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("text", arg)
