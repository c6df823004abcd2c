"""Flax Linen modules: mixers, blocks, backbones, heads and the registry.

Public entry points: ``arch.ARCHS`` (the registry), ``arch.ArchSpec``,
``arch.register``, ``arch.build``, ``arch.count_params``, ``arch.state_size`` and
``arch.param_rules``.
They are loaded on first use, so that importing one mixer module does not import
every other one.
"""

import importlib

_EXPORTS = {
    "ARCHS": "arch.registry",
    "ArchSpec": "arch.registry",
    "register": "arch.registry",
    "build": "arch.factory",
    "count_params": "arch.utils",
    "state_size": "arch.utils",
    "param_rules": "arch.params",
}
_SUBMODULES = ("params", "protocol", "registry")  # arch.params.SSM works without an import
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"arch.{name}")
    raise AttributeError(f"module 'arch' has no attribute {name!r}")
