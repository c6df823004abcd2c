"""The machine's own limits, measured in the same run as the benchmark they scale.

Utilisation is only meaningful against a rate measured on the same machine under the
same load, so every benchmark measures these first and divides by them:

- ``matmul_rate``: FLOP/s of a square float32 matmul (2 n^3 FLOPs), jitted, median of
  repeats: the practical peak of dense work, the denominator of model-FLOPs utilisation
  (MFU, Chowdhery et al. 2022, PaLM appendix B).
- ``memory_bandwidth``: bytes/s of streaming reads, ``sum(x)`` over an array much
  larger than the caches, the denominator of a memory-bound kernel's fraction of
  bandwidth. (A written output would be a fresh buffer per call, whose page faults on
  CPU cost more than the copy: ``y = 2 x`` measures 7 GB/s where NumPy writing into an
  existing array and this read both measure ~37 GB/s on the 2-core development CPU.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench import time_call


def matmul_rate(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype``."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    seconds = time_call(jax.jit(jnp.matmul), (a, b), repeats)
    return 2.0 * n**3 / seconds


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading ``mib`` MiB of float32 once (``jnp.sum``)."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    seconds = time_call(jax.jit(jnp.sum), (x,), repeats)
    return x.nbytes / seconds


def measure(*, bandwidth: bool = False) -> dict:
    """{"backend", "device", "matmul_gflops" [, "bandwidth_gbs"]}, printed as one line."""
    out = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "matmul_gflops": matmul_rate() / 1e9,
    }
    if bandwidth:
        out["bandwidth_gbs"] = memory_bandwidth() / 1e9
    rates = ", ".join(f"{k} {v:.1f}" for k, v in out.items() if isinstance(v, float))
    print(f"machine: {out['backend']} ({out['device']}); measured {rates}")
    return out
