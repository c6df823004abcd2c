"""Parameter groups for the optimizer, declared by the modules themselves.

Each mixer class lists the names of its state-space / decay parameters in a class
attribute ``SSM_PARAMS`` (e.g. Mamba's ``A_log``, RWKV's ``time_decay``); those get
their own learning rate and no weight decay, as in state-spaces/s4 and S5. Norm
scales, biases, embeddings and positions get no weight decay.
"""

from __future__ import annotations

import jax

from arch.registry import ARCHS, CHANNEL_MIXERS

SSM = "ssm"
NO_DECAY = "no_decay"
DEFAULT = "default"
GROUPS = (DEFAULT, NO_DECAY, SSM)

_NO_DECAY_LEAVES = {"bias", "scale", "embedding", "positions"}


def ssm_param_names() -> frozenset[str]:
    classes = [spec.mixer for spec in ARCHS.values()] + [c for c in CHANNEL_MIXERS.values() if c]
    names: set[str] = set()
    for cls in classes:
        names |= set(getattr(cls, "SSM_PARAMS", ()))
    return frozenset(names)


def _key_name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def param_labels(params):
    """A pytree like ``params`` with one of ``GROUPS`` at every leaf."""
    ssm = ssm_param_names()

    def label(path, _):
        leaf = _key_name(path[-1])
        if leaf in ssm:
            return SSM
        if leaf in _NO_DECAY_LEAVES:
            return NO_DECAY
        return DEFAULT

    return jax.tree_util.tree_map_with_path(label, params)
