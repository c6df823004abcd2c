"""Pieces the family/task configs share."""

from __future__ import annotations

import ml_collections

from configs.base import get_config as base_config


def with_arch(arch: str | None, default: str = "mamba") -> ml_collections.ConfigDict:
    """The base config with ``config.arch`` set from the ``file.py:arch`` argument.

    Any registered architecture is valid, including one a notebook registered with
    ``arch.register`` in this process.
    """
    from arch import registry  # the registry imports every mixer

    arch = arch or default
    if arch not in registry.ARCHS:
        raise ValueError(
            f"unknown architecture {arch!r} after ':'; valid: {', '.join(registry.ARCHS)}"
        )
    config = base_config()
    config.arch = arch
    return config
