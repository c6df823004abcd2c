"""Pieces the family/task configs share."""

from __future__ import annotations

import ml_collections

from configs.base import get_config as base_config

# Registry names, spelled out here so that loading a config does not import the model
# code; tests/test_configs.py checks this list against arch.ARCHS.
ARCH_NAMES = (
    "transformer",
    "aft_full",
    "aft_local",
    "aft_simple",
    "aft_conv",
    "rwkv",
    "s4",
    "s4d",
    "mamba",
)


def with_arch(arch: str | None, default: str = "mamba") -> ml_collections.ConfigDict:
    """The base config with ``config.arch`` set from the ``file.py:arch`` argument."""
    arch = arch or default
    if arch not in ARCH_NAMES:
        raise ValueError(f"unknown architecture {arch!r} after ':'; valid: {', '.join(ARCH_NAMES)}")
    config = base_config()
    config.arch = arch
    return config
