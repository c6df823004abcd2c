"""Pallas forward kernel of the RWKV-4 WKV recurrence (running-max stabilised).

Per channel, with the state stored as ``(num, den, max)`` meaning ``num * e^max`` and
``den * e^max`` (RWKV-4 paper eq. 19-20; the official CUDA kernel's aa, bb, pp):

    y_t   = (num + e^{u + k_t} v_t) / (den + e^{u + k_t})        (before the update)
    num  <- e^{w} num + e^{k_t} v_t,   den <- e^{w} den + e^{k_t}

each sum rescaled by its largest exponent so that nothing overflows for large keys.
The differentiable entry point is ``kernels.wkv.wkv4(..., impl="pallas")``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels.pallas import common

F32 = jnp.float32


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


def forward(w, u, k, v, state, *, block_t: int, block_c: int, interpret: bool | None):
    """w, u [C]; k, v [B, L, C]; state (num, den, max) [B, C] float32 ->
    (y [B, L, C] in v's dtype, last (num, den, max), starts (num, den, max) [B, nb, C])."""
    batch, length, channels = k.shape
    bc, padded = common.channel_block(channels, block_c)
    n_blocks = common.n_time_blocks(length, block_t)
    # Padded channels: w = u = k = v = 0, finite and discarded.
    w, u, k, v = (common.pad_last(x, padded) for x in (w, u, k, v))
    w, u = w[None], u[None]
    state = tuple(common.pad_last(s, padded)[:, None] for s in state)
    param = pl.BlockSpec((1, bc), lambda i, j: (0, j))  # [1, C]: a rank-2 block for TPU
    seq, vec, starts = (
        common.seq_spec(length, bc),
        common.vec_spec(bc),
        common.starts_spec(n_blocks, bc),
    )
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
