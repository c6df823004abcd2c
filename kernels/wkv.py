"""RWKV-4's WKV operator (Peng et al. 2023, eq. 14), in the numerically stable form.

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})

with ``w = -exp(time_decay) < 0`` (applied by the caller) and ``u = time_first``. The
state is a ``WKVState(num, den, max)``: the two sums scaled by ``exp(-max)``, so no
exponential ever overflows, whatever the size of the keys (eq. 19-20 of the paper; the
official CUDA kernel's aa, bb, pp). This file holds every implementation:

- "sequential": ``lax.scan``, the readable reference every other one is tested against;
- "associative": ``lax.associative_scan`` over (length, num, den, max) segments;
- "chunked": sequential across chunks of ``chunk_size`` steps, a T x T decay matrix
  within (``kernels.chunking``);
- "pallas": the Pallas kernel of ``kernels.pallas.wkv`` forward, the chunk body
  recomputing each time block backward.

``wkv4`` validates once; the implementations assume validated inputs and a float32
``WKVState``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from kernels import chunking, dispatch
from kernels.chunking import merge_log_sums
from kernels.pallas import wkv as pallas_kernel

F32 = jnp.float32
# The running max of an empty history: exp(EMPTY_MAX - m) is exactly 0 for any real key,
# and EMPTY_MAX stays finite, so that EMPTY_MAX - EMPTY_MAX == 0 (-inf - -inf is NaN).
EMPTY_MAX = -1e38
# Logit of a masked (future or padded) term in a chunk: exp(_MASKED - m) == 0 and its
# gradient stays finite.
_MASKED = -1e30


class WKVState(NamedTuple):
    """The WKV recurrent state, each ``[batch, channels]`` float32.

    ``num * e^max`` and ``den * e^max`` are the decayed sums of e^{k_i} v_i and e^{k_i}
    over the history (RWKV-4 paper eq. 19-20; the CUDA kernel's aa, bb, pp). The split
    into (num, den) and max is not unique: compare or differentiate states through
    their value, e.g. ``(num / den, log(den) + max)``.
    """

    num: Float[Array, "batch channels"]
    den: Float[Array, "batch channels"]
    max: Float[Array, "batch channels"]


def empty_state(batch: int, channels: int) -> WKVState:
    """The state before the first token: empty sums."""
    zeros = jnp.zeros((batch, channels), F32)
    return WKVState(zeros, zeros, jnp.full((batch, channels), EMPTY_MAX, F32))


def _check(w, u, k, v, state) -> None:
    if k.ndim != 3 or v.shape != k.shape:
        raise ValueError(
            f"wkv4: k and v must both be [batch, length, channels], got {k.shape} and {v.shape}"
        )
    batch, _, c = k.shape
    if w.shape != (c,) or u.shape != (c,):
        raise ValueError(f"wkv4: w and u must be [channels] = ({c},), got {w.shape}, {u.shape}")
    if state is not None and (len(state) != 3 or any(jnp.shape(s) != (batch, c) for s in state)):
        raise ValueError(
            f"wkv4: state must be a WKVState (num, den, max) of three [batch, channels] = "
            f"{(batch, c)} arrays, got {[jnp.shape(s) for s in state]}; pass None to start "
            "from an empty state"
        )


def _sequential(w, u, k, v, state):
    """lax.scan over time; the readable reference."""
    dtype = v.dtype
    w, u, k, v = (x.astype(F32) for x in (w, u, k, v))

    def step(state, kv):
        num, den, mx = state
        k_t, v_t = kv
        # Output (eq. 14): the history plus the current token, a one-term sum (v_t, 1)
        # at logit u + k_t (u: the current token's bonus).
        y_num, y_den, _ = merge_log_sums(state, (v_t, 1.0, u + k_t))
        # State: decay the history by e^w, then add the current token (no bonus).
        return WKVState(*merge_log_sums((num, den, mx + w), (v_t, 1.0, k_t))), y_num / y_den

    xs = (jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1))
    state, ys = jax.lax.scan(step, state, xs)
    return jnp.swapaxes(ys, 0, 1).astype(dtype), state


def _associative(w, u, k, v, state):
    """Parallel over time with ``lax.associative_scan``.

    A segment of tokens, seen from an empty history, is summarised by its length n and
    its (num, den, max). Appending segment R after segment L decays L by e^{w n_R}:
    max = max(max_L + w n_R, max_R), num = num_L e^{max_L + w n_R - max} +
    num_R e^{max_R - max} (den alike): a log-space linear recurrence, hence associative.
    The initial state enters as a first segment of length 0.
    """
    dtype = v.dtype
    w, u, k, v = (x.astype(F32) for x in (w, u, k, v))
    bsz, _, c = k.shape
    num0, den0, max0 = state
    n = jnp.concatenate([jnp.zeros((bsz, 1, c)), jnp.ones_like(k)], axis=1)
    num = jnp.concatenate([num0[:, None], v], axis=1)
    den = jnp.concatenate([den0[:, None], jnp.ones_like(k)], axis=1)
    mx = jnp.concatenate([max0[:, None], k], axis=1)

    def combine(left, right):
        n_l, num_l, den_l, max_l = left
        n_r, *right_sums = right
        return n_l + n_r, *merge_log_sums((num_l, den_l, max_l + w * n_r), right_sums)

    _, nums, dens, maxs = jax.lax.associative_scan(combine, (n, num, den, mx), axis=1)
    # Token t reads the history before it (inclusive state t-1, i.e. index t here).
    history = (nums[:, :-1], dens[:, :-1], maxs[:, :-1])
    y_num, y_den, _ = merge_log_sums(history, (v, 1.0, u + k))
    return (y_num / y_den).astype(dtype), WKVState(nums[:, -1], dens[:, -1], maxs[:, -1])


def _chunk(shared, state, xs, valid):
    """WKV over one chunk (RWKV-4 paper eq. 19-20, running-max stabilised).

    With ``num/den`` the decayed sums before step t (stored as ``num * exp(max)``):
    y_t = (num_{t-1} + e^{u + k_t} v_t) / (den_{t-1} + e^{u + k_t}),
    num_t = e^{w} num_{t-1} + e^{k_t} v_t. Within the chunk, key s reaches output t
    (s < t) with log-weight (t - 1 - s) w + k_s and the incoming state with t w + max:
    a T x T matrix per channel, so the whole chunk is one masked weighted sum.
    ``valid`` steps are real; the state is taken after the last of them.
    """
    w, u = shared
    num, den, mx = state
    k, v = xs
    steps = k.shape[1]
    t = jnp.arange(steps)
    dist = (t[:, None] - 1 - t[None, :]).astype(F32)  # [T (out), T (key)]
    past = (t[None, :] < t[:, None])[None, :, :, None]
    diag = (t[None, :] == t[:, None])[None, :, :, None]
    logit = jnp.where(
        past,
        dist[None, :, :, None] * w + k[:, None],
        jnp.where(diag, u + k[:, None], _MASKED),
    )  # [B, T, T, C]
    carried = t[None, :, None].astype(F32) * w + mx[:, None]  # [B, T, C]
    m = jax.lax.stop_gradient(jnp.maximum(logit.max(axis=2), carried))
    e = jnp.exp(logit - m[:, :, None])
    e_state = jnp.exp(carried - m)
    y_num = jnp.einsum("btsc,bsc->btc", e, v) + e_state * num[:, None]
    y_den = e.sum(axis=2) + e_state * den[:, None]
    y = y_num / y_den

    # State after step valid - 1: key s decayed (valid - 1 - s) times, state valid times.
    n = valid.astype(F32)
    key_logit = jnp.where(t[None, :, None] < valid, (n - 1 - t[:, None]) * w + k, _MASKED)
    carried_end = n * w + mx
    m_end = jax.lax.stop_gradient(jnp.maximum(key_logit.max(axis=1), carried_end))
    e_end = jnp.exp(key_logit - m_end[:, None])
    scale = jnp.exp(carried_end - m_end)
    new_num = jnp.einsum("bsc,bsc->bc", e_end, v) + scale * num
    new_den = e_end.sum(axis=1) + scale * den
    return WKVState(new_num, new_den, m_end), y


def _chunked(w, u, k, v, state, *, chunk_size: int = 32):
    """Memory per chunk is O(B T^2 C) (the decay matrix), hence the smaller default."""
    chunking.check_chunk("chunk_size", chunk_size)
    shared = (w.astype(F32), u.astype(F32))
    y, state = chunking.scan_in_chunks(_chunk, shared, state, (k, v), chunk_size)
    return y.astype(v.dtype), state


def _pallas(w, u, k, v, state, *, block_t: int = 32, block_c: int = 128, interpret=None):
    """``block_t``: steps between saved states (the backward recomputes one block with
    the O(block_t^2) chunk body, hence 32); ``block_c``: channels per program (rounded
    to a power of two). ``interpret=None``: interpret on CPU only."""

    def forward(shared, h, xs):
        y, last, starts = pallas_kernel.forward(
            *shared, *xs, h, block_t=block_t, block_c=block_c, interpret=interpret
        )
        return y, WKVState(*last), WKVState(*starts)

    return chunking.recompute_vjp(forward, _chunk, block_t)((w, u), state, (k, v))


IMPLS = {
    "sequential": _sequential,
    "associative": _associative,
    "chunked": _chunked,
    "pallas": _pallas,
}
# CPU: lax.scan is fastest (docs/benchmarks.md). Elsewhere: chunked, until the Pallas
# kernel is measured on a GPU.
AUTO = {"cpu": "sequential", "default": "chunked"}


def wkv4(
    w: Float[Array, " channels"],
    u: Float[Array, " channels"],
    k: Float[Array, "batch length channels"],
    v: Float[Array, "batch length channels"],
    state: WKVState | tuple[Float[Array, "batch channels"], ...] | None = None,
    *,
    impl: str = "auto",
    **options,
) -> tuple[Float[Array, "batch length channels"], WKVState]:
    """``(wkv, state)``; passing ``state`` back continues the sequence exactly.

    ``w = -exp(time_decay)``. ``state``: a ``WKVState`` (or any (num, den, max)
    3-tuple), None for an empty history. ``y`` has v's dtype, the state is float32.
    ``options`` go to the implementation: ``chunk_size`` ("chunked"); ``block_t``,
    ``block_c``, ``interpret`` ("pallas").
    """
    _check(w, u, k, v, state)
    if state is None:
        state = empty_state(k.shape[0], k.shape[-1])
    state = WKVState(*(jnp.asarray(s).astype(F32) for s in state))
    y, state = dispatch.call("wkv4", IMPLS, impl, AUTO, w, u, k, v, state, **options)
    return y, WKVState(*state)
