"""Pallas forward kernel of the Mamba selective scan (S6) with the discretisation fused in.

Mamba paper eq. 2a and 4: per step, for a block of channels d and all states n,

    x_t[d, n] = exp(delta_t[d] A[d, n]) x_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d]
    y_t[d]    = sum_n C_t[n] x_t[d, n]

``exp(delta A)`` and ``delta B u`` are formed in registers one step at a time, so no
``[B, L, D, N]`` tensor is ever written; the state ``x`` ([block_d, N], float32) lives
in registers. ``delta`` bias/softplus, the ``D`` skip and the ``silu(z)`` gate are
elementwise ``[B, L, D]`` work done around the kernel. The differentiable entry point
is ``kernels.selective_scan.selective_scan(..., impl="pallas")``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels.pallas import common

F32 = jnp.float32


def _kernel(
    u_ref, delta_ref, a_ref, b_ref, c_ref, h0_ref,
    y_ref, last_ref, starts_ref,
    *, length, block_t,
):  # fmt: skip
    a_mat = a_ref[...].astype(F32)  # [bd, N]

    def step(t, x):
        delta = delta_ref[t, :].astype(F32)  # [bd]
        u = u_ref[t, :].astype(F32)
        b, c = b_ref[t, :].astype(F32), c_ref[t, :].astype(F32)  # [N]
        x = jnp.exp(delta[:, None] * a_mat) * x + (delta * u)[:, None] * b[None, :]
        y_ref[t, :] = jnp.sum(x * c[None, :], axis=1).astype(y_ref.dtype)
        return x

    def save_start(j, x):
        starts_ref[j, :, :] = x

    x0 = h0_ref[...].astype(F32)
    last_ref[...] = common.walk_time(length, block_t, step, save_start, x0)


def forward(u, delta, a_mat, b_mat, c_mat, h0, *, block_t: int, block_d: int, interpret):
    """u, delta [B, L, D]; A [D, N]; B, C [B, L, N]; h0 [B, D, N] float32 ->
    (y [B, L, D] float32, last [B, D, N], starts [B, n_blocks, D, N])."""
    batch, length, dim = u.shape
    n_state = a_mat.shape[1]
    bd, padded = common.channel_block(dim, block_d)
    n_pad = pl.next_power_of_2(n_state)  # Triton loads rows of 2^k elements
    n_blocks = common.n_time_blocks(length, block_t)
    # Padded channels/states have A = B = C = u = delta = 0: x stays 0, y is discarded.
    u, delta = common.pad_last(u, padded), common.pad_last(delta, padded)
    b_mat, c_mat = common.pad_last(b_mat, n_pad), common.pad_last(c_mat, n_pad)
    a_mat = common.pad_last(jnp.pad(a_mat, ((0, padded - dim), (0, 0))), n_pad)
    h0 = common.pad_last(jnp.pad(h0, ((0, 0), (0, padded - dim), (0, 0))), n_pad)
    seq = common.seq_spec(length, bd)
    seq_state = pl.BlockSpec((pl.squeezed, length, n_pad), lambda i, j: (i, 0, 0))
    state = pl.BlockSpec((pl.squeezed, bd, n_pad), lambda i, j: (i, j, 0))
    starts = pl.BlockSpec((pl.squeezed, n_blocks, bd, n_pad), lambda i, j: (i, 0, j, 0))
    y, last, h_starts = pl.pallas_call(
        partial(_kernel, length=length, block_t=block_t),
        grid=(batch, padded // bd),
        in_specs=[seq, seq, pl.BlockSpec((bd, n_pad), lambda i, j: (j, 0))]
        + [seq_state, seq_state, state],
        out_specs=[seq, state, starts],
        out_shape=[
            jax.ShapeDtypeStruct((batch, length, padded), F32),
            jax.ShapeDtypeStruct((batch, padded, n_pad), F32),
            jax.ShapeDtypeStruct((batch, n_blocks, padded, n_pad), F32),
        ],
        name="selective_scan",
        **common.call_options(interpret),
    )(u, delta, a_mat, b_mat, c_mat, h0)
    return y[..., :dim], last[:, :dim, :n_state], h_starts[:, :, :dim, :n_state]
