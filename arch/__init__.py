"""Flax Linen modules: mixers, blocks, backbones, heads and the registry.

Public entry points: ``arch.ARCHS``, ``arch.build``, ``arch.count_params`` and
``arch.param_labels``. They are loaded on first use, so that importing one mixer
module does not import every other one.
"""

import importlib

_EXPORTS = {
    "ARCHS": "arch.registry",
    "build": "arch.registry",
    "count_params": "arch.utils",
    "param_labels": "arch.labels",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'arch' has no attribute {name!r}")
