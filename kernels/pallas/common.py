"""What the three Pallas kernels share: call options per backend, block sizes, padding,
the block specs of a per-(batch, channel block) program, and the time walk.

Layout: the grid runs over (batch, channel blocks); every program walks the whole
sequence with ``walk_time``, keeping the state in registers (float32) and writing the
state that enters each time block of ``block_t`` steps to a small ``starts`` output,
from which the backward pass recomputes one block at a time
(``kernels.chunking.recompute_vjp``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import dispatch


def call_options(interpret: bool | None) -> dict:
    """``interpret`` and ``compiler_params`` for ``pl.pallas_call`` on this backend.

    ``interpret=None`` means: interpret on CPU (the only way Pallas runs there). On GPU
    the Triton path is asked for explicitly, since JAX now defaults ``pallas_call`` to
    Mosaic GPU; TPU uses Mosaic's defaults.
    """
    where = dispatch.backend()
    if interpret is None:
        interpret = where == "cpu"
    if interpret or where != "gpu":
        return {"interpret": bool(interpret)}
    from jax.experimental.pallas import triton as plt

    return {"interpret": False, "compiler_params": plt.CompilerParams(num_warps=4)}


def channel_block(channels: int, block: int) -> tuple[int, int]:
    """(power-of-two block, channels padded to a multiple of it); Triton needs 2^k rows."""
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block_c={block!r} must be a positive int (e.g. 128).")
    size = min(pl.next_power_of_2(block), pl.next_power_of_2(channels))
    return size, -(-channels // size) * size


def pad_last(x: jax.Array, size: int, value: float = 0.0) -> jax.Array:
    """Pad the last axis of ``x`` at the end up to ``size``."""
    extra = size - x.shape[-1]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)], constant_values=value)


def time_blocks(length: int, block_t: int) -> tuple[int, int]:
    """(number of full time blocks, length of the last partial one)."""
    if not isinstance(block_t, int) or block_t < 1:
        raise ValueError(f"block_t={block_t!r} must be a positive int (e.g. 64).")
    return length // block_t, length % block_t


def n_time_blocks(length: int, block_t: int) -> int:
    """Number of time blocks, the partial last one included (= saved start states)."""
    full, tail = time_blocks(length, block_t)
    return full + (tail > 0)


# Block specs of one program (batch row i, channel block j). Rank-3 arrays with a
# squeezed batch axis; per-row vectors are [B, 1, C] rather than [B, C] because TPU
# blocks need full or (8, 128)-aligned last two dims.


def seq_spec(length: int, block: int) -> pl.BlockSpec:
    """[length, block] of a [B, L, C] array."""
    return pl.BlockSpec((pl.squeezed, length, block), lambda i, j: (i, 0, j))


def vec_spec(block: int) -> pl.BlockSpec:
    """[1, block] of a [B, 1, C] array (a state)."""
    return pl.BlockSpec((pl.squeezed, 1, block), lambda i, j: (i, 0, j))


def starts_spec(n_blocks: int, block: int) -> pl.BlockSpec:
    """[n_blocks, block] of a [B, n_blocks, C] array (the saved block-start states)."""
    return pl.BlockSpec((pl.squeezed, n_blocks, block), lambda i, j: (i, 0, j))


def walk_time(length: int, block_t: int, step, save_start, state):
    """Run ``step(t, state)`` for t < length, calling ``save_start(j, state)`` at the
    start of every time block j. Static trip counts only (a trailing partial block is a
    second loop), so the loops lower to plain ``for`` loops on every backend."""
    full, tail = time_blocks(length, block_t)

    def block(j, state, steps):
        save_start(j, state)
        return jax.lax.fori_loop(0, steps, lambda i, s: step(j * block_t + i, s), state)

    state = jax.lax.fori_loop(0, full, lambda j, s: block(j, s, block_t), state)
    if tail:
        state = block(full, state, tail)
    return state
