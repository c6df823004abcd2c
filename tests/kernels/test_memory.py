"""The chunked, Pallas and hand-written-backward (the CPU default) selective scans do not
keep a [B, L, D, N] tensor for backward.

XLA's compiled memory analysis (``temp_size_in_bytes``: scratch buffers, not counting
arguments and outputs) of ``jit(grad(sum(selective_scan(...))))`` at B=1, L=2048,
D=64, N=16, where the [B, L, D, N] float32 tensor is 8 MiB. What remains is O(B L D)
(inputs re-laid out in chunks, their gradients), O(B T D N) for the chunk being
recomputed and O(B L/T D N) for the saved chunk-boundary states.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from kernels.selective_scan import selective_scan

B, L, D, N = 1, 2048, 64, 16
CHUNK = 16  # near sqrt(L): balances the recomputed chunk against the saved boundary states


def _bldn_bytes(length: int = L) -> int:
    return B * length * D * N * 4


def grad_temp_bytes(scan, length: int = L) -> int:
    """Scratch memory of the compiled gradient of sum(y) w.r.t. u, delta, A, B, C."""
    f32, S = jnp.float32, jax.ShapeDtypeStruct
    shapes = (S((B, length, D), f32),) * 2 + (S((D, N), f32),) + (S((B, length, N), f32),) * 2
    grad = jax.grad(lambda *args: jnp.sum(scan(*args)[0]), argnums=(0, 1, 2, 3, 4))
    stats = jax.jit(grad).lower(*shapes).compile().memory_analysis()
    return stats.temp_size_in_bytes


def _print_associative_for_contrast():
    """The associative impl may well keep [B, L, D, N] alive (expected): shown, not asserted."""
    temp = grad_temp_bytes(partial(selective_scan, impl="associative"))
    print(f"associative: temp {temp / 2**20:.2f} MiB = {temp / _bldn_bytes():.2f} x [B,L,D,N]")


def test_chunked_backward_memory_does_not_scale_with_bldn():
    scan = partial(selective_scan, impl="chunked", chunk_size=CHUNK)
    temp = grad_temp_bytes(scan)
    temp_double = grad_temp_bytes(scan, 2 * L)
    print(f"\nchunked: temp {temp / 2**20:.2f} MiB; [B,L,D,N] f32 {_bldn_bytes() / 2**20:.0f} MiB")
    _print_associative_for_contrast()
    assert temp < 0.5 * _bldn_bytes()
    # Twice the length costs far less than another [B, L, D, N] tensor would.
    assert temp_double - temp < 0.5 * _bldn_bytes()


def test_pallas_backward_memory_does_not_scale_with_bldn():
    temp = grad_temp_bytes(partial(selective_scan, impl="pallas", block_t=CHUNK))
    print(f"\npallas: temp {temp / 2**20:.2f} MiB; [B,L,D,N] f32 {_bldn_bytes() / 2**20:.0f} MiB")
    assert temp < 0.5 * _bldn_bytes()


def test_sequential_vjp_backward_memory_does_not_scale_with_bldn():
    """The CPU default keeps one state per chunk and recomputes the rest backward."""
    scan = partial(selective_scan, impl="sequential_vjp", chunk_size=CHUNK)
    temp = grad_temp_bytes(scan)
    temp_double = grad_temp_bytes(scan, 2 * L)
    print(f"\nsequential_vjp: temp {temp / 2**20:.2f} MiB")
    assert temp < 0.5 * _bldn_bytes()
    assert temp_double - temp < 0.5 * _bldn_bytes()
