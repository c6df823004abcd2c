"""Pallas kernel for the RWKV-4 WKV recurrence (running-max stabilised).

Per channel, with the state stored as ``(num, den, max)`` meaning ``num * e^max`` and
``den * e^max`` (RWKV-4 paper eq. 19-20; the official CUDA kernel's aa, bb, pp):

    y_t   = (num + e^{u + k_t} v_t) / (den + e^{u + k_t})        (before the update)
    num  <- e^{w} num + e^{k_t} v_t,   den <- e^{w} den + e^{k_t}

each sum rescaled by its largest exponent so that nothing overflows for large keys.
The backward pass recomputes time blocks with ``kernels.chunked.wkv_chunk``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from kernels import pallas as common
from kernels.chunked import (
    F32,
    check_wkv,
    from_chunks,
    pad_time,
    scan_chunks_vjp,
    to_chunks,
    valid_counts,
    wkv_chunk,
    wkv_initial_state,
)


def _kernel(
    w_ref, u_ref, k_ref, v_ref, num0_ref, den0_ref, max0_ref,
    y_ref, num_ref, den_ref, max_ref, s_num_ref, s_den_ref, s_max_ref,
    *, length, block_t,
):  # fmt: skip
    w, u = w_ref[0, :].astype(F32), u_ref[0, :].astype(F32)

    def step(t, state):
        num, den, mx = state
        k, v = k_ref[t, :].astype(F32), v_ref[t, :].astype(F32)
        bonus = u + k  # the current token's own weight
        p = jnp.maximum(mx, bonus)
        e_state, e_token = jnp.exp(mx - p), jnp.exp(bonus - p)
        y = (e_state * num + e_token * v) / (e_state * den + e_token)
        y_ref[t, :] = y.astype(y_ref.dtype)
        decayed = w + mx
        p = jnp.maximum(decayed, k)
        e_state, e_token = jnp.exp(decayed - p), jnp.exp(k - p)
        return e_state * num + e_token * v, e_state * den + e_token, p

    def save_start(j, state):
        s_num_ref[j, :], s_den_ref[j, :], s_max_ref[j, :] = state

    state = tuple(r[0, :].astype(F32) for r in (num0_ref, den0_ref, max0_ref))
    state = common.walk_time(length, block_t, step, save_start, state)
    num_ref[0, :], den_ref[0, :], max_ref[0, :] = state


def _forward(w, u, k, v, state, block_t, block_c, interpret):
    """-> (y [B, L, C], state (num, den, max) [B, C], starts (num, den, max) [B, nb, C])."""
    batch, length, channels = k.shape
    bc, padded = common.channel_block(channels, block_c)
    full, tail = common.time_blocks(length, block_t)
    n_blocks = full + (tail > 0)
    # Padded channels: w = u = k = v = 0, finite and discarded.
    w, u, k, v = (common.pad_last(x, padded) for x in (w, u, k, v))
    w, u = w[None], u[None]
    state = tuple(common.pad_last(s, padded)[:, None] for s in state)
    param = pl.BlockSpec((1, bc), lambda i, j: (0, j))  # [1, C]: a rank-2 block for TPU
    seq = pl.BlockSpec((pl.squeezed, length, bc), lambda i, j: (i, 0, j))
    # [B, 1, C] rather than [B, C]: TPU blocks need full or (8, 128)-aligned last dims.
    vec = pl.BlockSpec((pl.squeezed, 1, bc), lambda i, j: (i, 0, j))
    starts = pl.BlockSpec((pl.squeezed, n_blocks, bc), lambda i, j: (i, 0, j))
    vec_shape = jax.ShapeDtypeStruct((batch, 1, padded), F32)
    starts_shape = jax.ShapeDtypeStruct((batch, n_blocks, padded), F32)
    y, *rest = pl.pallas_call(
        partial(_kernel, length=length, block_t=block_t),
        grid=(batch, padded // bc),
        in_specs=[param, param, seq, seq, vec, vec, vec],
        out_specs=[seq, vec, vec, vec, starts, starts, starts],
        out_shape=[jax.ShapeDtypeStruct((batch, length, padded), v.dtype)]
        + [vec_shape] * 3
        + [starts_shape] * 3,
        name="wkv4",
        **common.call_options(interpret),
    )(w, u, k, v, *state)
    last = tuple(x[:, 0, :channels] for x in rest[:3])
    return y[..., :channels], last, tuple(x[..., :channels] for x in rest[3:])


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _wkv(w, u, k, v, state, block_t, block_c, interpret):
    y, state, _ = _forward(w, u, k, v, state, block_t, block_c, interpret)
    return y, state


def _wkv_fwd(w, u, k, v, state, block_t, block_c, interpret):
    y, last, starts = _forward(w, u, k, v, state, block_t, block_c, interpret)
    return (y, last), (w, u, k, v, starts)


def _wkv_bwd(block_t, block_c, interpret, residuals, cotangents):
    del block_c, interpret
    w, u, k, v, starts = residuals
    g_y, g_state = cotangents
    length = k.shape[1]
    padded = starts[0].shape[1] * block_t
    chunks = lambda x: to_chunks(pad_time(x.astype(F32), padded), block_t)
    (g_w, g_u), g_state0, (g_k, g_v) = scan_chunks_vjp(
        wkv_chunk,
        (w.astype(F32), u.astype(F32)),
        tuple(jnp.moveaxis(s, 1, 0) for s in starts),
        (chunks(k), chunks(v)),
        valid_counts(length, block_t),
        tuple(g.astype(F32) for g in g_state),
        chunks(g_y),
    )
    unchunk = lambda g, like: from_chunks(g)[:, :length].astype(like.dtype)
    return (
        g_w.astype(w.dtype),
        g_u.astype(u.dtype),
        unchunk(g_k, k),
        unchunk(g_v, v),
        g_state0,
    )


_wkv.defvjp(_wkv_fwd, _wkv_bwd)


def wkv4_pallas(
    w: Float[Array, " channels"],
    u: Float[Array, " channels"],
    k: Float[Array, "batch length channels"],
    v: Float[Array, "batch length channels"],
    state: tuple[Array, Array, Array] | None = None,
    *,
    block_t: int = 32,
    block_c: int = 128,
    interpret: bool | None = None,
) -> tuple[Float[Array, "batch length channels"], tuple[Array, Array, Array]]:
    """RWKV-4 WKV with a Pallas kernel; ``w = -exp(time_decay)``; ``(y, (num, den, max))``.

    ``block_t``: steps between saved states (the backward recomputes one block with the
    O(block_t^2) form of ``kernels.chunked.wkv_chunk``, hence 32); ``block_c``: channels
    per program (rounded to a power of two). ``interpret=None``: interpret on CPU only.
    State in float32; the gradient through the returned state is that of the state's
    value ``num * e^max`` (its split into num and max is not unique).
    """
    check_wkv(w, u, k, v, state)
    common.time_blocks(k.shape[1], block_t)  # validates block_t
    if state is None:
        state = wkv_initial_state(k.shape[0], k.shape[2])
    state = tuple(s.astype(F32) for s in state)
    return _wkv(w, u, k, v, state, block_t, block_c, interpret)
