"""Small helpers over parameter pytrees."""

from __future__ import annotations

import jax
import numpy as np


def count_params(params) -> int:
    """Number of scalars in a parameter pytree (``{"params": ...}`` or the inner dict)."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


def memory_leaves(state) -> list:
    """The arrays of a state that are memory of the past: every leaf except the fields a
    state type lists in ``DERIVED`` (values computed from the parameters and carried
    only to save recomputing them, such as S4's C)."""

    def strip(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # a NamedTuple state
            derived = getattr(type(node), "DERIVED", ())
            return type(node)(
                *(None if f in derived else strip(getattr(node, f)) for f in node._fields)
            )
        if isinstance(node, list | tuple):
            return type(node)(strip(x) for x in node)
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()}
        return node

    return jax.tree_util.tree_leaves(strip(state))


def state_size(model) -> dict | None:
    """The recurrent state one sequence carries: ``{"floats": all layers, "per_layer": the
    mean per block}``, counted from ``init_state`` (complex numbers count 2; position
    counters, which have no batch axis, do not count). None for a model without a
    recurrent form (bidirectional, or a classifier head).

    The Transformer's state is its KV cache at ``max_len``: it grows with the context,
    which is the contrast this number exists to show (zoology's recall-vs-state plots).
    """
    from arch.protocol import NoRecurrentFormError

    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "init_state"):
        return None  # not a model of this library (e.g. a test's own module)
    try:
        shapes = jax.eval_shape(
            lambda: backbone.init_with_output(jax.random.key(0), 1, method="init_state")[0]
        )
    except NoRecurrentFormError:
        return None  # bidirectional, or a CLS-token classifier
    floats = 0
    for leaf in memory_leaves(shapes):
        if len(leaf.shape) >= 1:  # per-sequence arrays have the batch axis (of size 1)
            per_value = 2 if np.issubdtype(leaf.dtype, np.complexfloating) else 1
            floats += int(np.prod(leaf.shape)) * per_value
    n_layers = len(getattr(shapes, "layers", ())) or 1
    return {"floats": floats, "per_layer": floats / n_layers}
