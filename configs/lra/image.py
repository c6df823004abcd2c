r"""Image (LRA): grayscale CIFAR-10 as a 1024-pixel sequence, 10 classes (tfds cifar10).

    python run.py train --config configs/lra/image.py:s4 --workdir runs/lra/image_s4
    python run.py train --config configs/lra/image.py:mamba,small \
        --workdir runs/lra-small/image_mamba
    python run.py train --config configs/lra/image.py:rwkv,smoke --workdir /tmp/smoke

The argument after ':' is an architecture of arch.ARCHS, optionally followed by
",small" (the CPU recipe) or ",smoke" (a 2-minute CPU run); see configs/lra/common.py.

Published test accuracy (%), the rows `run.py table lra` prints beside ours
(experiments/lra_table.PUBLISHED): S4 (latest) 88.65, S4D-LegS 88.19, RWKV 70.53, Transformer 42.44,
S5 88.00.
"""

from configs.lra.common import lra_config


def get_config(arg=None):
    return lra_config("image", arg)
