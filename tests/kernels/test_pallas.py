"""Pallas kernels (interpret mode on CPU) == the sequential reference, and they lower
for GPU (Triton) and TPU (Mosaic) without a device (cross-platform lowering)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import kernels.pallas as pallas_kernels
from tests.kernels.test_chunked import (
    BF16,
    BLOCK,
    assert_matches_reference,
    assert_split_equals_whole,
)

# Small channel blocks so that several programs run and channels get padded (6 -> 8).
PALLAS = {
    "linear_scan": partial(pallas_kernels.linear_scan_pallas, block_t=BLOCK, block_c=4),
    "wkv4": partial(pallas_kernels.wkv4_pallas, block_t=BLOCK, block_c=4),
    "selective_scan": partial(pallas_kernels.selective_scan_pallas, block_t=BLOCK, block_d=4),
}


@pytest.mark.parametrize("kernel", list(PALLAS))
@pytest.mark.parametrize("length", [1, 7, 33])
def test_pallas_matches_reference_f32(kernel, length):
    assert_matches_reference(kernel, PALLAS[kernel], length)


def test_pallas_linear_scan_reverse():
    assert_matches_reference("linear_scan", PALLAS["linear_scan"], 33, reverse=True)


@pytest.mark.parametrize("kernel", list(PALLAS))
def test_pallas_matches_reference_bf16(kernel):
    assert_matches_reference(kernel, PALLAS[kernel], 33, dtype=BF16)


def test_pallas_wkv_state_carries_across_calls():
    assert_split_equals_whole("wkv4", PALLAS["wkv4"])


def test_interpret_is_automatic_on_cpu():
    assert jax.default_backend() != "cpu" or pallas_kernels.call_options(None)["interpret"]


def _lowered_text(platform: str, monkeypatch) -> str:
    """Lower all three kernels (forward and backward) for ``platform`` from this host."""
    monkeypatch.setattr(
        pallas_kernels, "platform", lambda: "gpu" if platform == "cuda" else platform
    )
    f32, S = jnp.float32, jax.ShapeDtypeStruct
    b, length, c, n = 2, 40, 48, 16

    def loss(a, k, u, delta, A, B):
        h, _ = pallas_kernels.linear_scan_pallas(a, k.astype(BF16))
        y, _ = pallas_kernels.wkv4_pallas(A[:, 0] - 1.0, A[:, 1], k, h)
        y2, _ = pallas_kernels.selective_scan_pallas(u, delta, A, B, B, block_t=16)
        return jnp.sum(y) + jnp.sum(y2)

    shapes = (S((b, length, c), f32),) * 4 + (S((c, n), f32), S((b, length, n), f32))
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4, 5))).trace(*shapes)
    return lowered.lower(lowering_platforms=(platform,)).as_text()


def test_pallas_lowers_for_gpu_triton(monkeypatch):
    text = _lowered_text("cuda", monkeypatch)
    assert text.count("triton") >= 3  # one Triton custom call per kernel


def test_pallas_lowers_for_tpu_mosaic(monkeypatch):
    text = _lowered_text("tpu", monkeypatch)
    assert text.count("tpu_custom_call") >= 3


def test_pallas_rejects_bad_input():
    a = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match="block_t"):
        pallas_kernels.linear_scan_pallas(a, a, block_t=0)
    with pytest.raises(ValueError, match="block_c"):
        pallas_kernels.wkv4_pallas(jnp.ones(3), jnp.ones(3), a, a, block_c=0)
    with pytest.raises(ValueError, match="d_inner"):
        pallas_kernels.selective_scan_pallas(a, a, jnp.ones((4, 2)), a[..., :2], a[..., :2])
