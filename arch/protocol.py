"""The mixer protocol, and the helpers that check it.

Every causal sequence mixer in ``arch/`` (and every backbone built from them) is a
Flax Linen module written in ``setup()`` style, so that all of these methods share
the same parameters:

- ``__call__(x, *, train=False) -> y``: parallel over ``x: [batch, length, d_model]``;
- ``init_state(batch_size) -> state``: the state before the first token (a pytree);
- ``step(state, x_t) -> (state, y_t)``: one token, ``x_t: [batch, d_model]``;
- ``prefill(state, x) -> (state, y)``: parallel over a chunk that continues ``state``.

The parallel and recurrent forms must agree; ``recurrent_apply`` and
``prefill_then_step`` below are what the tests (and a notebook prototyping a new cell)
use to check that. For language models the same methods exist with token ids in
place of ``x`` and logits in place of ``y``.

Mixer constructor fields shared by every mixer: ``d_model``, ``layer_id`` and
``n_layers`` (for depth-dependent initialisation), and ``causal`` where a
bidirectional form exists. Bidirectional mixers raise ``ValueError`` from ``step``,
``init_state`` and ``prefill``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


class NotCausalError(ValueError):
    """A recurrent method was called on a bidirectional mixer."""


def require_causal(module: nn.Module, method: str) -> None:
    if not getattr(module, "causal", True):
        raise NotCausalError(
            f"{type(module).__name__}.{method}: the mixer is bidirectional (causal=False), "
            "so it has no recurrent form; build it with causal=True for step/prefill."
        )


def recurrent_apply(module: nn.Module, params: Any, x: jax.Array, state: Any = None):
    """Run ``module`` token by token with ``step``; returns ``(y, final_state)``.

    ``x`` is ``[batch, length, ...]`` (features or token ids); ``y`` is stacked on
    axis 1 like the parallel output.
    """
    if state is None:
        state = module.apply(params, x.shape[0], method="init_state")

    def body(carry, x_t):
        return module.apply(params, carry, x_t, method="step")

    state, ys = jax.lax.scan(body, state, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(ys, 0, 1), state


def prefill_then_step(module: nn.Module, params: Any, x: jax.Array, split: int):
    """Prefill ``x[:, :split]`` in parallel, then step through the rest.

    Returns ``(y, final_state)`` with ``y`` over the whole length.
    """
    state = module.apply(params, x.shape[0], method="init_state")
    state, y_head = module.apply(params, state, x[:, :split], method="prefill")
    if split == x.shape[1]:
        return y_head, state
    y_tail, state = recurrent_apply(module, params, x[:, split:], state)
    return jnp.concatenate([y_head, y_tail], axis=1), state


def max_abs_diff(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))
