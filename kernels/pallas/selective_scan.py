"""Pallas kernel for the Mamba selective scan (S6) with the discretisation fused in.

Mamba paper eq. 2a and 4: per step, for a block of channels d and all states n,

    x_t[d, n] = exp(delta_t[d] A[d, n]) x_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d]
    y_t[d]    = sum_n C_t[n] x_t[d, n]

``exp(delta A)`` and ``delta B u`` are formed in registers one step at a time, so no
``[B, L, D, N]`` tensor is ever written; the state ``x`` ([block_d, N], float32) lives
in registers. ``delta`` bias/softplus, the ``D`` skip and the ``silu(z)`` gate are
elementwise ``[B, L, D]`` work done around the kernel. The backward pass recomputes
time blocks with ``kernels.chunked.selective_chunk`` from the saved block-start states.
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
    check_selective,
    discretisation_step,
    from_chunks,
    pad_time,
    scan_chunks_vjp,
    selective_chunk,
    selective_output,
    to_chunks,
    valid_counts,
)


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


def _forward(u, delta, a_mat, b_mat, c_mat, h0, block_t, block_d, interpret):
    """Core scan -> (y [B, L, D] f32, last [B, D, N], starts [B, nb, D, N])."""
    batch, length, dim = u.shape
    n_state = a_mat.shape[1]
    bd, padded = common.channel_block(dim, block_d)
    n_pad = pl.next_power_of_2(n_state)  # Triton loads rows of 2^k elements
    full, tail = common.time_blocks(length, block_t)
    n_blocks = full + (tail > 0)
    # Padded channels/states have A = B = C = u = delta = 0: x stays 0, y is discarded.
    u, delta = common.pad_last(u, padded), common.pad_last(delta, padded)
    b_mat, c_mat = common.pad_last(b_mat, n_pad), common.pad_last(c_mat, n_pad)
    a_mat = common.pad_last(jnp.pad(a_mat, ((0, padded - dim), (0, 0))), n_pad)
    h0 = common.pad_last(jnp.pad(h0, ((0, 0), (0, padded - dim), (0, 0))), n_pad)
    seq = pl.BlockSpec((pl.squeezed, length, bd), lambda i, j: (i, 0, j))
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


@partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _scan(u, delta, a_mat, b_mat, c_mat, h0, block_t, block_d, interpret):
    y, last, _ = _forward(u, delta, a_mat, b_mat, c_mat, h0, block_t, block_d, interpret)
    return y, last


def _scan_fwd(u, delta, a_mat, b_mat, c_mat, h0, block_t, block_d, interpret):
    y, last, starts = _forward(u, delta, a_mat, b_mat, c_mat, h0, block_t, block_d, interpret)
    return (y, last), (u, delta, a_mat, b_mat, c_mat, starts)


def _scan_bwd(block_t, block_d, interpret, residuals, cotangents):
    del block_d, interpret
    u, delta, a_mat, b_mat, c_mat, starts = residuals
    g_y, g_last = cotangents
    length = u.shape[1]
    padded = starts.shape[1] * block_t
    chunks = lambda x: to_chunks(pad_time(x.astype(F32), padded), block_t)
    (g_a,), g_h0, g_xs = scan_chunks_vjp(
        selective_chunk,
        (a_mat.astype(F32),),
        jnp.moveaxis(starts, 1, 0),
        tuple(chunks(x) for x in (u, delta, b_mat, c_mat)),
        valid_counts(length, block_t),
        g_last,
        chunks(g_y),
    )
    g_u, g_delta, g_b, g_c = (
        from_chunks(g)[:, :length].astype(x.dtype)
        for g, x in zip(g_xs, (u, delta, b_mat, c_mat), strict=True)
    )
    return g_u, g_delta, g_a.astype(a_mat.dtype), g_b, g_c, g_h0


_scan.defvjp(_scan_fwd, _scan_bwd)


def selective_scan_pallas(
    u: Float[Array, "batch length dim"],
    delta: Float[Array, "batch length dim"],
    A: Float[Array, "dim state"],
    B: Float[Array, "batch length state"],
    C: Float[Array, "batch length state"],
    D: Float[Array, " dim"] | None = None,
    z: Float[Array, "batch length dim"] | None = None,
    delta_bias: Float[Array, " dim"] | None = None,
    delta_softplus: bool = False,
    state: Float[Array, "batch dim state"] | None = None,
    *,
    block_t: int = 64,
    block_d: int = 64,
    interpret: bool | None = None,
) -> tuple[Float[Array, "batch length dim"], Float[Array, "batch dim state"]]:
    """Mamba selective scan with a Pallas kernel; returns ``(y, last_state)``.

    ``block_t``: steps between saved states (the backward recomputes one
    ``[B, block_t, D, N]`` block at a time); ``block_d``: channels per program (rounded
    to a power of two). ``interpret=None``: interpret on CPU only. State in float32.
    """
    check_selective(u, delta, A, B, C, D, z, delta_bias, state)
    common.time_blocks(u.shape[1], block_t)  # validates block_t
    batch, _, dim = u.shape
    h0 = jnp.zeros((batch, dim, A.shape[1]), F32) if state is None else state.astype(F32)
    delta_eff = discretisation_step(delta, delta_bias, delta_softplus)
    y, last = _scan(u, delta_eff, A, B, C, h0, block_t, block_d, interpret)
    return selective_output(y, u, D, z).astype(u.dtype), last
