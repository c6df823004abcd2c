"""Diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over the length axis.

The building block of S4D/Mamba-style recurrences (and of the minGRU/LRU cells a
notebook prototypes). ``impl`` picks the implementation; "sequential" is the readable
reference every other one is tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from kernels import chunked, dispatch, pallas


def _check(a, b, h0):
    if b.ndim < 2:
        raise ValueError(f"linear_scan: b must be [batch, length, ...], got shape {b.shape}")
    try:
        jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"linear_scan: a {a.shape} does not broadcast against b {b.shape}"
        ) from None
    if h0 is not None and h0.shape != b.shape[:1] + b.shape[2:]:
        raise ValueError(
            f"linear_scan: h0 must be [batch, ...] = {b.shape[:1] + b.shape[2:]}, got {h0.shape}"
        )


def _initial(b, h0):
    return jnp.zeros(b.shape[:1] + b.shape[2:], b.dtype) if h0 is None else h0


def _sequential(a, b, h0=None, *, reverse=False):
    h0 = _initial(b, h0)

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    h_last, hs = jax.lax.scan(
        step, h0, (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1)), reverse=reverse
    )
    return jnp.swapaxes(hs, 0, 1), h_last


def _combine(left, right):
    # Applying (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2.
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def _associative(a, b, h0=None, *, reverse=False):
    h0 = _initial(b, h0)
    a = jnp.broadcast_to(a, b.shape)
    a_cum, b_cum = jax.lax.associative_scan(_combine, (a, b), axis=1, reverse=reverse)
    hs = a_cum * h0[:, None] + b_cum
    return hs, hs[:, 0] if reverse else hs[:, -1]


IMPLS = {
    "sequential": _sequential,
    "associative": _associative,
    "chunked": chunked.linear_scan_chunked,
    "pallas": pallas.linear_scan_pallas,
}
# CPU: measured (docs/benchmarks.md): lax.scan beats the parallel forms there.
# Elsewhere: chunked keeps memory at chunk boundaries (no [B, L, D, N] for the backward
# pass) in plain JAX; pallas becomes the default once it is measured on a GPU.
AUTO = {"cpu": "sequential", "default": "chunked"}


def linear_scan(
    a: Inexact[Array, "batch length ..."],
    b: Inexact[Array, "batch length ..."],
    h0: Inexact[Array, "batch ..."] | None = None,
    *,
    reverse: bool = False,
    impl: str = "auto",
) -> tuple[Inexact[Array, "batch length ..."], Inexact[Array, "batch ..."]]:
    """All states and the last one (the state after position 0 when ``reverse``)."""
    _check(a, b, h0)
    dtype = jnp.result_type(a, b)
    if h0 is None:
        h0 = jnp.zeros(b.shape[:1] + b.shape[2:], dtype)
    a = jnp.broadcast_to(a, b.shape).astype(dtype)
    fn = dispatch.pick("linear_scan", IMPLS, impl, AUTO)
    return fn(a, b.astype(dtype), h0.astype(dtype), reverse=reverse)
