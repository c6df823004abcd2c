"""Small helpers over parameter pytrees."""

from __future__ import annotations

import jax
import numpy as np


def count_params(params) -> int:
    """Number of scalars in a parameter pytree (``{"params": ...}`` or the inner dict)."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))
