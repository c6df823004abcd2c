"""Pallas kernels for the recurrences (linear scan, RWKV-4 WKV, Mamba selective scan).

Layout shared by the three kernels: the grid runs over (batch, channel blocks), every
program walks the whole sequence with a ``fori_loop``, keeping the state in registers
(float32) and writing the state that enters each time block of ``block_t`` steps to a
small ``starts`` output. Reverse-mode autodiff goes through ``jax.custom_vjp``: the
forward saves only the inputs and those chunk-start states, and the backward recomputes
each time block from its start state in plain JAX (``kernels.chunked.scan_chunks_vjp``),
walking the blocks backwards.

Backends: on GPU the kernels lower through the Triton path (requested explicitly, since
JAX now defaults ``pallas_call`` to Mosaic GPU); loads and stores are rows of a
power-of-two channel block. On CPU they run with ``interpret=True`` (chosen
automatically). TPU uses Mosaic's defaults (untested here: no TPU was available).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def platform() -> str:
    """'cpu', 'gpu' or 'tpu' (a function so that tests can pretend to be on a GPU)."""
    return jax.default_backend()


def call_options(interpret: bool | None) -> dict:
    """``interpret`` and ``compiler_params`` for ``pl.pallas_call`` on this platform.

    ``interpret=None`` means: interpret on CPU (the only way Pallas runs there).
    """
    where = platform()
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


from kernels.pallas.linear_scan import linear_scan_pallas  # noqa: E402
from kernels.pallas.selective_scan import selective_scan_pallas  # noqa: E402
from kernels.pallas.wkv import wkv4_pallas  # noqa: E402

__all__ = ["linear_scan_pallas", "selective_scan_pallas", "wkv4_pallas"]
