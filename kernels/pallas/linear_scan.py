"""Pallas forward kernel of the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t.

One program per (batch row, channel block) walks the sequence step by step with the
state in float32 registers, saving the state that enters each time block. The
differentiable entry point is ``kernels.linear_scan.linear_scan(..., impl="pallas")``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels.pallas import common

F32 = jnp.float32


def _kernel(a_ref, b_ref, h0_ref, h_ref, last_ref, starts_ref, *, length, block_t):
    def step(t, h):
        h = a_ref[t, :].astype(F32) * h + b_ref[t, :].astype(F32)
        h_ref[t, :] = h.astype(h_ref.dtype)
        return h

    def save_start(j, h):
        starts_ref[j, :] = h

    h0 = h0_ref[0, :].astype(F32)
    last_ref[0, :] = common.walk_time(length, block_t, step, save_start, h0)


def forward(a, b, h0, *, out_dtype, block_t: int, block_c: int, interpret: bool | None):
    """a, b [B, L, C], h0 [B, C] float32 -> (h_all [B, L, C] in ``out_dtype``,
    h_last [B, C] float32, starts [B, n_blocks, C] float32)."""
    batch, length, channels = a.shape
    bc, padded = common.channel_block(channels, block_c)
    n_blocks = common.n_time_blocks(length, block_t)
    a = common.pad_last(a, padded, 1.0)  # identity steps in padded channels
    b, h0 = common.pad_last(b, padded), common.pad_last(h0, padded)[:, None]
    seq, vec = common.seq_spec(length, bc), common.vec_spec(bc)
    h_all, h_last, h_starts = pl.pallas_call(
        partial(_kernel, length=length, block_t=block_t),
        grid=(batch, padded // bc),
        in_specs=[seq, seq, vec],
        out_specs=[seq, vec, common.starts_spec(n_blocks, bc)],
        out_shape=[
            jax.ShapeDtypeStruct((batch, length, padded), out_dtype),
            jax.ShapeDtypeStruct((batch, 1, padded), F32),
            jax.ShapeDtypeStruct((batch, n_blocks, padded), F32),
        ],
        name="linear_scan",
        **common.call_options(interpret),
    )(a, b, h0)
    return h_all[..., :channels], h_last[:, 0, :channels], h_starts[..., :channels]
