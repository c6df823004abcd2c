"""Attention Free Transformer operations (Zhai et al. 2021, "An Attention Free Transformer").

AFT-full, paper eq. 2, for every position t and channel d:

    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w[t, t']) V_t' / sum_t' exp(K_t' + w[t, t'])

The variants only change the pairwise bias w:

- AFT-local (eq. 3): w[t, t'] inside the window |t - t'| < s, and 0 (not -inf) outside,
  so every position still sees the whole context, with no learned bias;
- AFT-simple (eq. 4): w = 0, so the sum is a softmax of K over time;
- AFT-conv (eq. 5): per head i, w[t, t'] = w_i[t - t'] inside a window of kernel size s
  and 0 outside (the paper writes it as a depthwise conv with kernel exp(w_i) - 1 plus
  the global sum; we sum exp(K + w) directly, which is the same number without the
  cancellation of the "- 1"); the kernel may be re-parameterised per head with a gain
  and a shift (the paper's "Parameterization" paragraph, ``conv_reparam``).

A causal form masks t' > t. Numerics: ``exp(K + w)`` overflows float32 near 88, so
every sum subtracts its per-(t, channel) maximum first, and is kept in float32.
The exact form materialises ``K + w[t]`` for a block of queries at a time
(``lax.map`` with ``batch_size``; the block is recomputed in the backward pass), so
memory is O(block * batch * length * channels) rather than O(length^2 * channels).
``impl``: "exact" (that form; "auto" everywhere) or "matmul" (the paper's fast form,
one bias for all channels, so AFT-full/local; see ``_aft_matmul`` for its limit). The
parallel AFT-local/conv cost O(T^2 d) here; an O(T s d) windowed form would be a new row.

Position bias ``w`` of AFT-full/local: a dense [max_len, max_len] array, or a
``LowRankBias(u, v)`` meaning w = u v^T with u, v [max_len, rank] (a factorised w, as
the paper suggests to cut the T^2 parameters); only the [rows, columns] block a call
reads is formed, never the [max_len, max_len] table.

Padding (bidirectional forms): ``mask`` [B, L] bool, True at real tokens. Padded keys
are set to ``RUN_FLOOR`` (a finite -inf) and their values to 0 before the sums, so
sum_t' exp(K_t' + w[t, t']) V_t' runs over real t' only; a row whose every key is
padding (a pad row of an all-padding example) still gets finite weights.

Recurrent forms: AFT-simple keeps a running ``(num, den, max)`` per channel (O(1) state);
AFT-full keeps a KV cache of every past position; AFT-local and AFT-conv keep the last
``s - 1`` keys and values (where the learned bias applies) plus a running
``(num, den, max)`` of all older keys (bias 0): a fixed-size state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from jaxtyping import Array, Bool, Float, Int

from kernels.chunking import merge_log_sums
from kernels.dispatch import pick

# A finite "minus infinity" for running maxima: exp(RUN_FLOOR - m) is exactly 0 for any
# real key, and RUN_FLOOR - RUN_FLOOR = 0 (where -inf - -inf would be NaN).
RUN_FLOOR = -1e30
# Elements of one block of K + w[t] (queries x batch x context x channels).
_BLOCK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- core


class LowRankBias(NamedTuple):
    """A factorised position bias w = u v^T, u and v: [max_len, rank]."""

    u: Array
    v: Array


def _w_block(w, rows, cols) -> Array:
    """w[rows][:, cols] -> [T, S] float32, for a dense bias or a ``LowRankBias``.

    ``rows``, ``cols``: int arrays or slices. The low-rank product runs at full float32
    precision: TF32 (GPU default) would change w by ~1e-3, and w enters an exp.
    """
    if isinstance(w, LowRankBias):
        u, v = w.u.astype(jnp.float32), w.v.astype(jnp.float32)
        return jnp.einsum("tr,sr->ts", u[rows], v[cols], precision=jax.lax.Precision.HIGHEST)
    block = w[rows, cols] if isinstance(rows, slice) else w[rows[:, None], cols[None, :]]
    return block.astype(jnp.float32)


def _mask_keys(k, v, mask):
    """Padded keys -> RUN_FLOOR (exp weight exactly 0 next to any real key), values -> 0.

    Finite rather than -inf so that a row with no real key stays finite (uniform over the
    padding); zero values so that non-finite padding cannot leak as 0 * inf.
    """
    if mask is None:
        return k, v
    mask = jnp.asarray(mask)
    if mask.shape != k.shape[:2]:
        raise ValueError(f"aft: mask must be [batch, length] = {k.shape[:2]}, got {mask.shape}")
    real = mask.astype(bool)[..., None]
    f32 = jnp.float32
    return jnp.where(real, k.astype(f32), RUN_FLOOR), jnp.where(real, v.astype(f32), 0.0)


def _expand_heads(bias: Array, channels: int) -> Array:
    """[..., heads] -> [..., channels]: each head's bias covers its channels."""
    heads = bias.shape[-1]
    return bias if heads == 1 else jnp.repeat(bias, channels // heads, axis=-1)


def _aft_one_query(q_t, k, v, bias_t, run):
    """Eq. 2 for one query position, stable; ``bias_t`` [S, heads] is -inf where masked.

    ``run`` = (num, den, max) [B, D]: keys already summed with bias 0, or None.
    """
    a = k + _expand_heads(bias_t, k.shape[-1])[None]  # [B, S, D]
    m = jnp.max(a, axis=1)
    if run is not None:
        m = jnp.maximum(m, run[2])
    m = jax.lax.stop_gradient(m)  # cancels between num and den
    e = jnp.exp(a - m[:, None])
    num, den = jnp.sum(e * v, axis=1), jnp.sum(e, axis=1)
    if run is not None:
        scale = jnp.exp(run[2] - m)
        num, den = num + run[0] * scale, den + run[1] * scale
    return jax.nn.sigmoid(q_t) * num / den


def _aft_exact(q, k, v, bias, run=None):
    """q [B, T, D]; k, v [B, S, D]; bias [T, S, heads] (-inf = not visible)."""
    (batch, length, dim), context = q.shape, k.shape[1]
    block = max(1, min(length, _BLOCK_ELEMENTS // max(1, batch * context * dim)))
    f32 = jnp.float32
    k, v = k.astype(f32), v.astype(f32)

    @jax.checkpoint  # keep only the inputs of each block for the backward pass
    def one(args):
        q_t, bias_t = args
        return _aft_one_query(q_t, k, v, bias_t, run)

    y = jax.lax.map(one, (jnp.swapaxes(q.astype(f32), 0, 1), bias.astype(f32)), batch_size=block)
    return jnp.swapaxes(y, 0, 1).astype(q.dtype)


def _aft_matmul(q, k, v, bias, run=None):
    """The paper's fast form: exp(w) @ (exp(K) * V) / exp(w) @ exp(K), one bias for all channels.

    Stabilised by subtracting max_t' K (per channel) and max_t' w[t] (per row). Exact
    unless, in a causal row, every visible key is ~87 below the sequence's largest key
    (then that row underflows to 0/0); use the "exact" implementation for such inputs.
    """
    if bias.shape[-1] != 1 or run is not None:
        raise ValueError("aft: impl='matmul' supports one bias for all channels and no state")
    f32 = jnp.float32
    k, v, w = k.astype(f32), v.astype(f32), bias[..., 0].astype(f32)
    ew = jnp.exp(w - jax.lax.stop_gradient(jnp.max(w, axis=1, keepdims=True)))  # [T, S]
    ek = jnp.exp(k - jax.lax.stop_gradient(jnp.max(k, axis=1, keepdims=True)))  # [B, S, D]
    num = jnp.einsum("ts,bsd->btd", ew, ek * v)
    den = jnp.einsum("ts,bsd->btd", ew, ek)
    return (jax.nn.sigmoid(q.astype(f32)) * num / den).astype(q.dtype)


IMPLS = {"exact": _aft_exact, "matmul": _aft_matmul}
AUTO = {"default": "exact"}


def _bias(values, t, tp, *, causal: bool, in_window=None):
    """values [T, S, heads] -> additive bias: 0 outside the window, -inf where invisible."""
    if in_window is not None:
        values = jnp.where(in_window[..., None], values, 0.0)
    visible = tp[None, :] >= 0
    if causal:
        visible = visible & (tp[None, :] <= t[:, None])
    return jnp.where(visible[..., None], values, -jnp.inf)


def _check(name: str, q, k, v) -> None:
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"{name}: q, k, v must all be [batch, length, channels] of one shape; got "
            f"{q.shape}, {k.shape}, {v.shape}"
        )


def _check_w(name: str, w, length: int) -> None:
    if isinstance(w, LowRankBias):
        u, v = w
        if u.ndim != 2 or u.shape != v.shape or u.shape[0] < length:
            raise ValueError(
                f"{name}: a LowRankBias needs u, v of one shape [max_len, rank] with max_len "
                f">= length={length}, got {u.shape}, {v.shape}; build the layer with a "
                "larger max_len"
            )
        return
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < length:
        raise ValueError(
            f"{name}: w must be a square [max_len, max_len] bias with max_len >= length="
            f"{length}, got {w.shape}; build the layer with a larger max_len"
        )


# ------------------------------------------------------------------------ parallel


def aft_full(
    q: Float[Array, "batch length dim"],
    k: Float[Array, "batch length dim"],
    v: Float[Array, "batch length dim"],
    w: Float[Array, "max_len max_len"] | LowRankBias,
    *,
    causal: bool,
    mask: Bool[Array, "batch length"] | None = None,
    impl: str = "auto",
) -> Float[Array, "batch length dim"]:
    """AFT-full (eq. 2) with the top-left [L, L] block of the learned bias ``w``.

    ``mask``: True at real tokens; padded keys contribute nothing (module docstring).
    """
    _check("aft_full", q, k, v)
    length = q.shape[1]
    _check_w("aft_full", w, length)
    k, v = _mask_keys(k, v, mask)
    pos = jnp.arange(length)
    block = _w_block(w, slice(length), slice(length))
    bias = _bias(block[..., None], pos, pos, causal=causal)
    return pick("aft_full", IMPLS, impl, AUTO)(q, k, v, bias)


def _local_window(t, tp, window: int):
    return jnp.abs(t[:, None] - tp[None, :]) < window


def aft_local(
    q: Float[Array, "batch length dim"],
    k: Float[Array, "batch length dim"],
    v: Float[Array, "batch length dim"],
    w: Float[Array, "max_len max_len"] | LowRankBias,
    window: int,
    *,
    causal: bool,
    mask: Bool[Array, "batch length"] | None = None,
    impl: str = "auto",
) -> Float[Array, "batch length dim"]:
    """AFT-local (eq. 3): bias w[t, t'] where |t - t'| < window, 0 elsewhere."""
    _check("aft_local", q, k, v)
    if window < 1:
        raise ValueError(f"aft_local: window={window} must be >= 1")
    length = q.shape[1]
    _check_w("aft_local", w, length)
    k, v = _mask_keys(k, v, mask)
    pos = jnp.arange(length)
    in_window = _local_window(pos, pos, window)
    block = _w_block(w, slice(length), slice(length))
    bias = _bias(block[..., None], pos, pos, causal=causal, in_window=in_window)
    return pick("aft_local", IMPLS, impl, AUTO)(q, k, v, bias)


def aft_simple(
    q: Float[Array, "batch length dim"],
    k: Float[Array, "batch length dim"],
    v: Float[Array, "batch length dim"],
    *,
    causal: bool,
    mask: Bool[Array, "batch length"] | None = None,
    impl: str = "auto",
) -> Float[Array, "batch length dim"]:
    """AFT-simple (eq. 4): sigmoid(Q_t) * sum_t' softmax_t'(K) V_t' (t' <= t if causal)."""
    _check("aft_simple", q, k, v)
    k, v = _mask_keys(k, v, mask)
    if not causal:
        f32 = jnp.float32
        weights = jax.nn.softmax(k.astype(f32), axis=1)
        context = jnp.sum(weights * v.astype(f32), axis=1, keepdims=True)
        return (jax.nn.sigmoid(q.astype(f32)) * context).astype(q.dtype)
    state = aft_simple_init_state(q.shape[0], q.shape[-1])
    return aft_simple_chunk(state, q, k, v, impl=impl)[1]


def conv_reparam(
    w_conv: Float[Array, "heads kernel_size"],
    gain: Float[Array, " heads"],
    shift: Float[Array, " heads"],
    eps: float = 1e-5,
) -> Float[Array, "heads kernel_size"]:
    """The paper's AFT-conv kernel re-parameterisation, per head i:

    w_i <- gain_i * (w_i - mean(w_i)) / std(w_i) + shift_i   (gain, shift start at 0).
    """
    mean = jnp.mean(w_conv, axis=-1, keepdims=True)
    std = jnp.std(w_conv, axis=-1, keepdims=True)
    return gain[:, None] * (w_conv - mean) / (std + eps) + shift[:, None]


def _conv_values(w_conv, t, tp, *, causal: bool):
    """w_conv [H, s] -> in-window values [T, S, H] and the window mask [T, S].

    Causal: tap j weighs the key j steps back (0 <= t - t' < s). Bidirectional: the
    kernel is centred, tap j at offset t - t' = j - s // 2.
    """
    size = w_conv.shape[-1]
    taps = t[:, None] - tp[None, :] + (0 if causal else size // 2)
    in_window = (taps >= 0) & (taps < size)
    values = jnp.take(w_conv, jnp.clip(taps, 0, size - 1), axis=1)  # [H, T, S]
    return rearrange(values, "heads t s -> t s heads"), in_window


def _check_conv(q, w_conv, n_heads: int) -> None:
    if w_conv.ndim != 2 or w_conv.shape[0] != n_heads:
        raise ValueError(
            f"aft_conv: w_conv must be [n_heads={n_heads}, kernel_size], got {w_conv.shape}"
        )
    if q.shape[-1] % n_heads:
        raise ValueError(f"aft_conv: channels={q.shape[-1]} is not divisible by n_heads={n_heads}")


def aft_conv(
    q: Float[Array, "batch length dim"],
    k: Float[Array, "batch length dim"],
    v: Float[Array, "batch length dim"],
    w_conv: Float[Array, "heads kernel_size"],
    n_heads: int,
    *,
    causal: bool,
    gain: Float[Array, " heads"] | None = None,
    shift: Float[Array, " heads"] | None = None,
    mask: Bool[Array, "batch length"] | None = None,
    impl: str = "auto",
) -> Float[Array, "batch length dim"]:
    """AFT-conv (eq. 5): per-head relative bias w_i[t - t'] in the kernel window, 0 outside.

    With ``gain`` and ``shift`` the kernel is first re-parameterised (``conv_reparam``).
    Channels are split into ``n_heads`` contiguous groups, one kernel each.
    """
    _check("aft_conv", q, k, v)
    _check_conv(q, w_conv, n_heads)
    if gain is not None:
        w_conv = conv_reparam(w_conv, gain, shift)
    k, v = _mask_keys(k, v, mask)
    pos = jnp.arange(q.shape[1])
    values, in_window = _conv_values(w_conv, pos, pos, causal=causal)
    bias = _bias(values, pos, pos, causal=causal, in_window=in_window)
    return pick("aft_conv", IMPLS, impl, AUTO)(q, k, v, bias)


# ----------------------------------------------------------------------- recurrent


def aft_simple_init_state(batch: int, dim: int):
    """(num, den, max), each [batch, dim]: nothing seen yet."""
    zeros = jnp.zeros((batch, dim), jnp.float32)
    return (zeros, zeros, jnp.full((batch, dim), RUN_FLOOR, jnp.float32))


def _simple_sequential(state, k, v):
    def body(carry, kv):
        k_t, v_t = kv
        carry = merge_log_sums(carry, (v_t, jnp.ones_like(k_t), k_t))
        return carry, carry

    state, sums = jax.lax.scan(body, state, (jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1)))
    return state, jax.tree.map(lambda s: jnp.swapaxes(s, 0, 1), sums)


def _simple_associative(state, k, v):
    prefix = jax.lax.associative_scan(merge_log_sums, (v, jnp.ones_like(k), k), axis=1)
    sums = merge_log_sums(jax.tree.map(lambda s: s[:, None], state), prefix)
    return jax.tree.map(lambda s: s[:, -1], sums), sums


SIMPLE_IMPLS = {"sequential": _simple_sequential, "associative": _simple_associative}
SIMPLE_AUTO = {"cpu": "sequential", "default": "associative"}


def aft_simple_chunk(state, q, k, v, *, impl: str = "auto"):
    """Causal AFT-simple over a chunk ``[B, T, D]`` continuing ``state``; -> (state, y)."""
    _check("aft_simple_chunk", q, k, v)
    f32 = jnp.float32
    fn = pick("aft_simple", SIMPLE_IMPLS, impl, SIMPLE_AUTO)
    state, (num, den, _) = fn(state, k.astype(f32), v.astype(f32))
    return state, (jax.nn.sigmoid(q.astype(f32)) * num / den).astype(q.dtype)


def aft_simple_step(state, q_t, k_t, v_t):
    """One token ``[B, D]``: the O(1) running-sum recurrence; -> (state, y_t)."""
    f32 = jnp.float32
    state = merge_log_sums(state, (v_t.astype(f32), jnp.ones_like(k_t, f32), k_t.astype(f32)))
    return state, (jax.nn.sigmoid(q_t) * state[0] / state[1]).astype(q_t.dtype)


def aft_full_chunk(
    cache: tuple[Array, Array],
    pos: Int[Array, ""],
    q: Float[Array, "batch chunk dim"],
    k: Float[Array, "batch chunk dim"],
    v: Float[Array, "batch chunk dim"],
    w: Float[Array, "max_len max_len"] | LowRankBias,
    *,
    impl: str = "auto",
):
    """Causal AFT-full over a chunk at ``pos``; ``cache`` = (k, v), each [B, max_len, D].

    Writes the chunk at ``pos`` (like a KV cache) and lets position pos + i see
    cache entries <= pos + i. ``pos + T > max_len`` cannot be checked for a traced
    ``pos``: the write and the bias rows would be clamped. Returns (cache, y).
    """
    _check("aft_full_chunk", q, k, v)
    cache_k, cache_v = cache
    size, length = cache_k.shape[1], q.shape[1]
    _check_w("aft_full_chunk", w, size)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, pos, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, pos, 0))
    t = pos + jnp.arange(length)
    if isinstance(w, LowRankBias):  # rows pos..pos+T of u (clamped alike), all of v
        u_rows = jax.lax.dynamic_slice(w.u, (pos, 0), (length, w.u.shape[1]))
        rows = _w_block(LowRankBias(u_rows, w.v), slice(None), slice(size))
    else:
        rows = jax.lax.dynamic_slice(w[:, :size], (pos, 0), (length, size))
    bias = _bias(rows[..., None], t, jnp.arange(size), causal=True)
    y = pick("aft_full", IMPLS, impl, AUTO)(q, cache_k, cache_v, bias)
    return (cache_k, cache_v), y


def aft_window_init_state(batch: int, window: int, dim: int):
    """(keys, values) of the last window - 1 positions, and the (num, den, max) of the rest."""
    buf = jnp.zeros((batch, window - 1, dim), jnp.float32)
    return (buf, buf, aft_simple_init_state(batch, dim))


def _window_chunk(state, pos, q, k, v, values_fn):
    """Shared by AFT-local and AFT-conv: the window buffer + the running sum of older keys.

    Context = [buffer; chunk], entry c at absolute position pos - W + c (W = buffer
    size). Afterwards the first T entries leave the window: they are folded into the
    running sum with bias 0 (entries at negative positions are empty and skipped).
    """
    buf_k, buf_v, run = state
    held, length = buf_k.shape[1], q.shape[1]
    ctx_k = jnp.concatenate([buf_k, k.astype(jnp.float32)], axis=1)
    ctx_v = jnp.concatenate([buf_v, v.astype(jnp.float32)], axis=1)
    t = pos + jnp.arange(length)
    tp = pos - held + jnp.arange(held + length)
    values, in_window = values_fn(t, tp)
    bias = _bias(values, t, tp, causal=True, in_window=in_window)
    y = _aft_exact(q, ctx_k, ctx_v, bias, run)
    # Fold the leaving entries into (num, den, max); empty slots count as exp(-inf) = 0.
    leaving = jnp.where((tp[:length] >= 0)[None, :, None], ctx_k[:, :length], -jnp.inf)
    m = jnp.maximum(run[2], jnp.max(leaving, axis=1))
    e = jnp.exp(leaving - m[:, None])
    scale = jnp.exp(run[2] - m)
    run = (
        run[0] * scale + jnp.sum(e * ctx_v[:, :length], axis=1),
        run[1] * scale + jnp.sum(e, axis=1),
        m,
    )
    return (ctx_k[:, length:], ctx_v[:, length:], run), y


def aft_local_chunk(
    state,
    pos: Int[Array, ""],
    q,
    k,
    v,
    w: Float[Array, "max_len max_len"] | LowRankBias,
    window: int,
):
    """Causal AFT-local over a chunk ``[B, T, D]`` at ``pos`` continuing ``state``.

    ``state`` from ``aft_window_init_state(batch, window, dim)``. Positions beyond
    ``w``'s size cannot be checked for a traced ``pos`` (the bias lookup clamps).
    """
    _check("aft_local_chunk", q, k, v)

    size = w.u.shape[0] if isinstance(w, LowRankBias) else w.shape[0]

    def values_fn(t, tp):
        rows, cols = jnp.clip(t, 0, size - 1), jnp.clip(tp, 0, size - 1)
        return _w_block(w, rows, cols)[..., None], _local_window(t, tp, window)

    return _window_chunk(state, pos, q, k, v, values_fn)


def aft_conv_chunk(
    state,
    pos: Int[Array, ""],
    q,
    k,
    v,
    w_conv: Float[Array, "heads kernel_size"],
    n_heads: int,
    *,
    gain=None,
    shift=None,
):
    """Causal AFT-conv over a chunk at ``pos``; ``state`` from ``aft_window_init_state``
    with ``window = kernel_size``."""
    _check("aft_conv_chunk", q, k, v)
    _check_conv(q, w_conv, n_heads)
    if gain is not None:
        w_conv = conv_reparam(w_conv, gain, shift)
    return _window_chunk(
        state, pos, q, k, v, lambda t, tp: _conv_values(w_conv, t, tp, causal=True)
    )


# One token is a chunk of length 1; these name the recurrent step of each variant.


def aft_full_step(cache, pos, q_t, k_t, v_t, w, *, impl: str = "auto"):
    """AFT-full, one token ``[B, D]`` at ``pos``: KV cache of every past position."""
    cache, y = aft_full_chunk(cache, pos, q_t[:, None], k_t[:, None], v_t[:, None], w, impl=impl)
    return cache, y[:, 0]


def aft_local_step(state, pos, q_t, k_t, v_t, w, window: int):
    """AFT-local, one token: window buffer + running sum of the older keys."""
    state, y = aft_local_chunk(state, pos, q_t[:, None], k_t[:, None], v_t[:, None], w, window)
    return state, y[:, 0]


def aft_conv_step(state, pos, q_t, k_t, v_t, w_conv, n_heads: int, *, gain=None, shift=None):
    """AFT-conv, one token: window buffer + running sum of the older keys."""
    state, y = aft_conv_chunk(
        state,
        pos,
        q_t[:, None],
        k_t[:, None],
        v_t[:, None],
        w_conv,
        n_heads,
        gain=gain,
        shift=shift,
    )
    return state, y[:, 0]
