"""Diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over the length axis.

The building block of S4D/Mamba-style recurrences: the discrete SSM recurrence
h_t = A_bar h_{t-1} + B_bar x_t (Mamba paper, Gu & Dao 2023, eq. 2a) with a diagonal
A_bar, elementwise; also the minGRU/LRU cells a notebook prototypes. This file holds
every implementation:

- "sequential": ``lax.scan``, the readable reference every other one is tested against;
- "associative": ``lax.associative_scan`` over the whole sequence (one chunk);
- "chunked": sequential across chunks of ``chunk_size`` steps, associative within
  (``kernels.chunking``); the backward pass keeps only chunk-boundary states;
- "pallas": the Pallas kernel of ``kernels.pallas.linear_scan`` forward, the chunk body
  recomputing each time block backward.

``linear_scan`` validates once; the implementations assume validated inputs of one
dtype, ``h0`` given, and always run forwards (``reverse`` flips around them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from kernels import chunking, dispatch
from kernels.pallas import linear_scan as pallas_kernel

F32 = jnp.float32
# Padded steps are identities, h -> 1 * h + 0, so the state leaves the last chunk as is.
_FILL = (1.0, 0.0)


def _check(a, b, h0) -> None:
    if b.ndim < 2:
        raise ValueError(f"linear_scan: b must be [batch, length, ...], got shape {b.shape}")
    try:
        shape = jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        shape = None
    if shape != b.shape:
        raise ValueError(
            f"linear_scan: a {a.shape} does not broadcast against b {b.shape} "
            "(a may only have size-1 axes where b does not)"
        )
    state = b.shape[:1] + b.shape[2:]
    if h0 is not None and h0.shape != state:
        raise ValueError(
            f"linear_scan: h0 must be [batch, ...] = {state} (the state of one step, "
            f"without the length axis), got {h0.shape}"
        )


def _sequential(a, b, h0):
    """lax.scan over time, in the inputs' dtype."""

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    h_last, hs = jax.lax.scan(step, h0, (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1)))
    return jnp.swapaxes(hs, 0, 1), h_last


def _chunk(shared, h, xs, valid):
    """One chunk, h [B, ...], a, b [B, T, ...]: prefix-compose the maps h -> a h + b,
    then apply them to the incoming state. Padding steps are identities."""
    del shared, valid
    a_cum, b_cum = jax.lax.associative_scan(chunking.combine_linear, xs, axis=1)
    h_all = a_cum * h[:, None] + b_cum
    return h_all[:, -1], h_all


def _associative(a, b, h0):
    """The whole sequence as one chunk, in the inputs' dtype."""
    h_last, hs = _chunk(None, h0, (a, b), None)
    return hs, h_last


def _chunked(a, b, h0, *, chunk_size: int = 64):
    """Accumulates in float32 (complex64 for complex inputs); outputs in the inputs' dtype."""
    chunking.check_chunk("chunk_size", chunk_size)
    acc = jnp.promote_types(b.dtype, F32)
    hs, h_last = chunking.scan_in_chunks(
        _chunk, None, h0.astype(acc), (a, b), chunk_size, fills=_FILL
    )
    return hs.astype(b.dtype), h_last.astype(b.dtype)


def _pallas(a, b, h0, *, block_t: int = 64, block_c: int = 128, interpret: bool | None = None):
    """``block_t``: steps between saved states (the backward recomputes one such block
    at a time); ``block_c``: channels per program (rounded to a power of two).
    ``interpret=None``: interpret on CPU only. Accumulates in float32."""
    batch, length = b.shape[:2]
    flat = lambda x: x.reshape(batch, length, -1)  # the kernel takes [B, L, C]

    def forward(shared, h, xs):
        del shared
        return pallas_kernel.forward(
            *xs, h, out_dtype=b.dtype, block_t=block_t, block_c=block_c, interpret=interpret
        )

    scan = chunking.recompute_vjp(forward, _chunk, block_t, fills=_FILL)
    hs, h_last = scan(None, h0.reshape(batch, -1).astype(F32), (flat(a), flat(b)))
    return hs.reshape(b.shape), h_last.reshape(h0.shape).astype(b.dtype)


IMPLS = {
    "sequential": _sequential,
    "associative": _associative,
    "chunked": _chunked,
    "pallas": _pallas,
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
    **options,
) -> tuple[Inexact[Array, "batch length ..."], Inexact[Array, "batch ..."]]:
    """All states and the last one (the state after position 0 when ``reverse``).

    ``a`` broadcasts against ``b`` (e.g. a time-invariant ``[1, 1, ...]`` decay).
    ``reverse=True`` runs from the end: h_t = a_t h_{t+1} + b_t. ``options`` go to the
    implementation: ``chunk_size`` ("chunked"); ``block_t``, ``block_c``, ``interpret``
    ("pallas").
    """
    _check(a, b, h0)
    dtype = jnp.result_type(a, b)
    h0 = jnp.zeros(b.shape[:1] + b.shape[2:], dtype) if h0 is None else h0.astype(dtype)
    a, b = jnp.broadcast_to(a, b.shape).astype(dtype), b.astype(dtype)
    if reverse:  # the same recurrence on the flipped sequence
        a, b = jnp.flip(a, 1), jnp.flip(b, 1)
    hs, h_last = dispatch.call("linear_scan", IMPLS, impl, AUTO, a, b, h0, **options)
    return (jnp.flip(hs, 1) if reverse else hs), h_last
