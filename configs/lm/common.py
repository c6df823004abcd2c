"""What the language-model configs share: the task and the per-architecture shapes.

Every architecture gets its own width (and, for blocks without a channel mixer, twice
the layers, as Mamba-130M has 24 blocks against Pythia-160M's 12) so that the parameter
counts match the Transformer's within a few percent; ``CPU_PARAMS`` records the counts
(``arch.count_params`` of the built model, byte vocabulary, seq_len 256), and
``tests/experiments/test_lm_data.py`` recomputes them. An architecture registered later
(a notebook cell) gets ``DEFAULT_SHAPE``, unmatched.
"""

from __future__ import annotations

import ml_collections

from configs.common import with_arch

# The byte-level CPU size: the Transformer's 4 x 128 (858,880 parameters with 256 ids).
CPU_SHAPES = {
    "transformer": {"d_model": 128, "n_layers": 4},
    "aft_full": {"d_model": 104, "n_layers": 4},  # + a [256, 256] position bias per layer
    "aft_local": {"d_model": 104, "n_layers": 4},
    "aft_simple": {"d_model": 128, "n_layers": 4},
    "aft_conv": {"d_model": 128, "n_layers": 4},
    "rwkv": {"d_model": 124, "n_layers": 4},
    "rwkv6": {"d_model": 128, "n_layers": 3},  # heads of 64 channels: width 128 or 192
    "s4": {"d_model": 164, "n_layers": 8},
    "s4d": {"d_model": 176, "n_layers": 8},
    "s5": {"d_model": 244, "n_layers": 8},
    "mamba": {"d_model": 120, "n_layers": 8},
    "mamba2": {"d_model": 112, "n_layers": 8, "head_dim": 32},  # 64 needs width 128 or 96
    "moe_mamba": {"d_model": 54, "n_layers": 4},  # 8 experts: matched on total parameters
    "hawk": {"d_model": 120, "n_layers": 4},
}
CPU_PARAMS = {
    "transformer": 858_880,
    "aft_full": 840_176,
    "aft_local": 840_176,
    "aft_simple": 858_880,
    "aft_conv": 859_424,
    "rwkv": 868_992,
    "rwkv6": 883_200,
    "s4": 858_376,
    "s4d": 864_864,
    "s5": 860_136,
    "mamba": 859_320,
    "mamba2": 888_600,
    "moe_mamba": 859_734,
    "hawk": 874_200,
}
DEFAULT_SHAPE = {"d_model": 128, "n_layers": 4}


def lm_config(arch: str | None, data_dir: str, seq_len: int) -> ml_collections.ConfigDict:
    """The base config with ``config.arch`` and the ``lm`` task on ``data_dir``."""
    config = with_arch(arch)
    config.task.name = "lm"
    config.task.options.data_dir = data_dir
    config.task.options.seq_len = seq_len
    return config


def split_arg(arg: str | None, variants: tuple[str, ...]) -> tuple[str | None, str]:
    """``"arch[,variant]"`` -> (arch or None, variant or "")."""
    arch, _, variant = (arg or "").partition(",")
    if variant and variant not in variants:
        raise ValueError(
            f"config argument {arg!r}: expected 'arch' or 'arch,variant' with variant in "
            f"{', '.join(variants)}"
        )
    return arch or None, variant
