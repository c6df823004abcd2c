"""Pallas kernels: interpret mode is automatic on CPU, and the kernels lower for GPU
(Triton) and TPU (Mosaic) without a device (cross-platform lowering).

Their numbers (``impl="pallas"`` == the sequential reference, forward and gradients)
are checked in test_impls.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels import dispatch
from kernels.linear_scan import linear_scan
from kernels.pallas import common
from kernels.selective_scan import selective_scan
from kernels.wkv import wkv4

BF16 = jnp.bfloat16


def test_interpret_is_automatic_on_cpu():
    assert jax.default_backend() != "cpu" or common.call_options(None)["interpret"]


def _lowered_text(platform: str, monkeypatch) -> str:
    """Lower all three kernels (forward and backward) for ``platform`` from this host."""
    monkeypatch.setattr(dispatch, "backend", lambda: "gpu" if platform == "cuda" else platform)
    f32, S = jnp.float32, jax.ShapeDtypeStruct
    b, length, c, n = 2, 40, 48, 16

    def loss(a, k, u, delta, A, B):
        h, _ = linear_scan(a, k.astype(BF16), impl="pallas")
        y, _ = wkv4(A[:, 0] - 1.0, A[:, 1], k, h, impl="pallas")
        y2, _ = selective_scan(u, delta, A, B, B, impl="pallas", block_t=16)
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
