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
bidirectional form exists (a mixer with a ``causal`` field *has* a bidirectional form,
and the registry derives that from the field). Bidirectional mixers raise
``NotCausalError`` from ``step``, ``init_state`` and ``prefill``.

Optimizer rules: a mixer declares how its own parameters train, next to them, with
``PARAM_RULES`` (see ``arch.params``); nothing else in the project lists parameter names.

Recurrent states are NamedTuples, so that ``step`` reads as what the state is:

===========================  ==============================================================
state                        fields
===========================  ==============================================================
``NoState``                  none: position-wise channel mixers (MLP, GLU)
``mixers.rwkv.RWKVState``    ``shift`` (last input), ``wkv`` (``kernels.wkv.WKVState``:
                             ``num, den, max``)
``mixers.rwkv.ShiftState``   ``shift``: RWKV's ChannelMix token shift
``mixers.mamba.MambaState``  ``conv`` (last ``d_conv - 1`` inputs), ``ssm`` ([B, E, N])
``mixers.s4.S4State``        ``h``: the complex SSM state (S4, S4D); S4 also carries
                             ``C``, recovered from C~ once (``DERIVED``: not memory)
``mixers.attention.KVCache`` ``k, v`` ([B, max_len, H, Dh]), ``pos``
``mixers.aft.*``             AFT-simple: running ``(num, den, max)``; AFT-full: a cache;
                             AFT-local/conv: last keys/values plus a running sum, ``pos``
``blocks.BlockState``        ``mixer``, ``channel``: the two sub-states of a block
``backbone.BackboneState``   ``pos`` (tokens consumed), ``layers`` (one BlockState each)
===========================  ==============================================================

A state with a ``pos`` field counts the tokens it has consumed (``state._replace(pos=n)``
moves it, e.g. to benchmark a step with ``n`` tokens of context).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import linen as nn


class NoState(NamedTuple):
    """The state of a mixer that keeps nothing between tokens (an empty pytree)."""


class NoRecurrentFormError(ValueError):
    """A recurrent method (init_state, step, prefill) was called on a model without one."""


class NotCausalError(NoRecurrentFormError):
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

    state, ys = jax.lax.scan(body, state, rearrange(x, "b l ... -> l b ..."))
    return rearrange(ys, "l b ... -> b l ..."), state


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


def form_differences(module: nn.Module, params: Any, x: jax.Array, split: int) -> dict[str, float]:
    """How far the recurrent forms are from the parallel one: max |parallel - recurrent|
    and max |parallel - prefill(x[:, :split]) then step|. Each form is jitted (compiling
    them is faster than running them op by op)."""
    parallel = jax.jit(module.apply)(params, x)
    recurrent, _ = jax.jit(lambda p, x: recurrent_apply(module, p, x))(params, x)
    prefilled, _ = jax.jit(lambda p, x: prefill_then_step(module, p, x, split))(params, x)
    return {
        "recurrent": max_abs_diff(parallel, recurrent),
        "prefill_then_step": max_abs_diff(parallel, prefilled),
    }


def max_abs_diff(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


def step_via_prefill(module: nn.Module, state: Any, x_t: jax.Array):
    """``step`` as a one-token ``prefill``, for mixers whose ``prefill`` runs the recurrence."""
    state, y = module.prefill(state, x_t[:, None])
    return state, y[:, 0]


def within_capacity(y: jax.Array, pos, length: int, max_len: int, where: str) -> jax.Array:
    """``y``, unless a fixed-size cache of ``max_len`` positions overflowed.

    Writing tokens ``pos .. pos + length - 1`` into a cache of ``max_len`` slots would
    clamp the write and give finite, wrong outputs. A concrete ``pos`` raises here; a
    traced one (under ``jit``) turns the outputs into NaN, which the training loop and
    any caller that checks its numbers see at once, rather than silent garbage.
    """
    if not isinstance(pos, jax.core.Tracer):
        end = int(pos) + length
        if end > max_len:
            raise ValueError(
                f"{where}: position {end - 1} is past max_len={max_len} (the cache size); "
                "build the model with a larger max_len or stop generating at max_len tokens"
            )
        return y
    return jnp.where(pos + length > max_len, jnp.nan, y)
