"""Pallas kernel for the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t.

One program per (batch row, channel block) walks the sequence step by step with the
state in float32 registers; the backward pass recomputes each time block from the
saved block-start states (see ``kernels.pallas``).
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
    flatten_linear,
    from_chunks,
    linear_chunk,
    pad_time,
    scan_chunks_vjp,
    to_chunks,
    valid_counts,
)


def _kernel(a_ref, b_ref, h0_ref, h_ref, last_ref, starts_ref, *, length, block_t):
    def step(t, h):
        h = a_ref[t, :].astype(F32) * h + b_ref[t, :].astype(F32)
        h_ref[t, :] = h.astype(h_ref.dtype)
        return h

    def save_start(j, h):
        starts_ref[j, :] = h

    h0 = h0_ref[0, :].astype(F32)
    last_ref[0, :] = common.walk_time(length, block_t, step, save_start, h0)


def _forward(a, b, h0, out_dtype, block_t, block_c, interpret):
    """a, b [B, L, C], h0 [B, C] f32 -> (h_all [B, L, C], h_last [B, C], starts [B, nb, C])."""
    batch, length, channels = a.shape
    bc, padded = common.channel_block(channels, block_c)
    full, tail = common.time_blocks(length, block_t)
    n_blocks = full + (tail > 0)
    a = common.pad_last(a, padded, 1.0)  # identity steps in padded channels
    b, h0 = common.pad_last(b, padded), common.pad_last(h0, padded)[:, None]
    seq = pl.BlockSpec((pl.squeezed, length, bc), lambda i, j: (i, 0, j))
    # [B, 1, C] rather than [B, C]: TPU blocks need full or (8, 128)-aligned last dims.
    vec = pl.BlockSpec((pl.squeezed, 1, bc), lambda i, j: (i, 0, j))
    starts = pl.BlockSpec((pl.squeezed, n_blocks, bc), lambda i, j: (i, 0, j))
    h_all, h_last, h_starts = pl.pallas_call(
        partial(_kernel, length=length, block_t=block_t),
        grid=(batch, padded // bc),
        in_specs=[seq, seq, vec],
        out_specs=[seq, vec, starts],
        out_shape=[
            jax.ShapeDtypeStruct((batch, length, padded), out_dtype),
            jax.ShapeDtypeStruct((batch, 1, padded), F32),
            jax.ShapeDtypeStruct((batch, n_blocks, padded), F32),
        ],
        name="linear_scan",
        **common.call_options(interpret),
    )(a, b, h0)
    return h_all[..., :channels], h_last[:, 0, :channels], h_starts[..., :channels]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _scan(a, b, h0, out_dtype, block_t, block_c, interpret):
    h_all, h_last, _ = _forward(a, b, h0, out_dtype, block_t, block_c, interpret)
    return h_all, h_last


def _scan_fwd(a, b, h0, out_dtype, block_t, block_c, interpret):
    h_all, h_last, starts = _forward(a, b, h0, out_dtype, block_t, block_c, interpret)
    return (h_all, h_last), (a, b, starts)


def _scan_bwd(out_dtype, block_t, block_c, interpret, residuals, cotangents):
    del out_dtype, block_c, interpret
    a, b, starts = residuals
    g_all, g_last = cotangents
    length = a.shape[1]
    padded = starts.shape[1] * block_t
    chunks = lambda x, fill=0.0: to_chunks(pad_time(x.astype(F32), padded, fill), block_t)
    _, g_h0, (g_a, g_b) = scan_chunks_vjp(
        linear_chunk,
        None,
        jnp.moveaxis(starts, 1, 0),
        (chunks(a, 1.0), chunks(b)),
        valid_counts(length, block_t),
        g_last.astype(F32),
        chunks(g_all),
    )
    unchunk = lambda g, like: from_chunks(g)[:, :length].astype(like.dtype)
    return unchunk(g_a, a), unchunk(g_b, b), g_h0


_scan.defvjp(_scan_fwd, _scan_bwd)


def linear_scan_pallas(
    a: Float[Array, "batch length ..."],
    b: Float[Array, "batch length ..."],
    h0: Float[Array, "batch ..."] | None = None,
    *,
    reverse: bool = False,
    block_t: int = 64,
    block_c: int = 128,
    interpret: bool | None = None,
) -> tuple[Float[Array, "batch length ..."], Float[Array, "batch ..."]]:
    """h_t = a_t * h_{t-1} + b_t over axis 1 with a Pallas kernel; ``(h_all, h_last)``.

    ``reverse=True`` runs from the end. ``block_t``: steps between saved states (the
    backward recomputes one such block at a time); ``block_c``: channels per program
    (rounded to a power of two). ``interpret=None``: interpret on CPU only.
    """
    dtype = jnp.result_type(a, b)
    a, b, h, shape = flatten_linear(a, b, h0)
    common.time_blocks(shape[1], block_t)  # validates block_t
    if reverse:
        a, b = a[:, ::-1], b[:, ::-1]
    h_all, h_last = _scan(a, b, h, dtype, block_t, block_c, interpret)
    if reverse:
        h_all = h_all[:, ::-1]
    return h_all.reshape(shape), h_last.reshape(shape[:1] + shape[2:]).astype(dtype)
