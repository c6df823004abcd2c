"""Running a recurrence chunk by chunk: sequential across chunks, parallel within.

A sequence of length L is cut into ceil(L / T) chunks of T steps. A ``lax.scan``
carries the recurrent state from chunk to chunk; inside a chunk a recurrence-specific
*chunk body* computes all T steps at once. Every body has the signature

    body(shared, h, xs, valid) -> (h_next, ys)

``shared``: parameters common to all chunks (a pytree, may be None); ``h``: the state
entering the chunk; ``xs``/``ys``: pytrees of ``[B, T, ...]`` float32 arrays; ``valid``:
how many of the T steps are real (the last chunk is padded at the end).

What lives here is what the three recurrences (``kernels.linear_scan``, ``kernels.wkv``,
``kernels.selective_scan``) share:

- the layout helpers (pad along time, to/from chunks, valid counts);
- ``scan_in_chunks``: the chunked forward, each chunk wrapped in ``jax.checkpoint`` so
  that reverse-mode autodiff keeps only the inputs and the chunk-boundary states and
  recomputes a chunk's interior in the backward pass (the selective scan never keeps a
  ``[B, L, D, N]`` tensor alive, only one ``[B, T, D, N]`` chunk);
- ``recompute_vjp``: the same backward for a forward computed elsewhere (a Pallas
  kernel that saves the state entering each time block);
- the two associative operators the scans share: ``combine_linear`` (composing
  h -> a h + b; the linear scan and the selective scan) and ``merge_log_sums`` (adding
  sums kept as (num, den, max) in log-sum-exp form; WKV and AFT's running sums).

Padding: each recurrence says which value makes a padded step harmless (an identity
step ``a = 1, b = 0``; ``delta = 0`` for the selective scan). WKV has no identity step
(its decay applies at every step), so its body reads ``valid`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from einops import rearrange
from jaxtyping import Array, Int

F32 = jnp.float32


def check_chunk(name: str, chunk: int) -> None:
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{name}={chunk!r} must be a positive int (e.g. 64).")


def pad_time(x: Array, length: int, value: float = 0.0) -> Array:
    """Pad axis 1 of ``x`` at the end up to ``length`` with ``value``."""
    extra = length - x.shape[1]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def to_chunks(x: Array, chunk: int) -> Array:
    """[B, n * T, ...] -> [n, B, T, ...] (the leading axis is scanned over)."""
    return rearrange(x, "b (n t) ... -> n b t ...", t=chunk)


def from_chunks(x: Array) -> Array:
    """[n, B, T, ...] -> [B, n * T, ...]."""
    return rearrange(x, "n b t ... -> b (n t) ...")


def valid_counts(length: int, chunk: int) -> Int[Array, " chunks"]:
    """Number of real (unpadded) steps in each chunk: T, ..., T, L - (n - 1) T."""
    n = -(-length // chunk)
    return jnp.minimum(chunk, length - chunk * jnp.arange(n, dtype=jnp.int32))


def _acc(x) -> jnp.dtype:
    """The accumulation dtype: float32, or complex64 for complex inputs."""
    return jnp.promote_types(x.dtype, F32)


def _chunk_all(xs, length: int, chunk: int, fills=None):
    """Each ``[B, L, ...]`` leaf of ``xs`` -> float32 (complex64 if complex)
    ``[n, B, T, ...]``, padded with its fill."""
    padded = -(-length // chunk) * chunk
    fills = jax.tree.map(lambda _: 0.0, xs) if fills is None else fills
    return jax.tree.map(
        lambda x, fill: to_chunks(pad_time(x.astype(_acc(x)), padded, fill), chunk), xs, fills
    )


def _unchunk_all(ys, length: int):
    """Each ``[n, B, T, ...]`` leaf -> ``[B, L, ...]`` (the padding dropped)."""
    return jax.tree.map(lambda y: from_chunks(y)[:, :length], ys)


def _length(xs) -> int:
    return jax.tree.leaves(xs)[0].shape[1]


def scan_chunks(body: Callable, shared, h0, xs, valid: Array):
    """Run ``body`` over chunks (leading axis of ``xs``), recomputing chunks in backward.

    Returns ``(h_last, ys)`` with ``ys`` stacked on a leading chunk axis.
    """
    step = jax.checkpoint(body)
    return jax.lax.scan(lambda h, x: step(shared, h, x[0], x[1]), h0, (xs, valid))


def scan_chunks_vjp(body: Callable, shared, h_starts, xs, valid: Array, g_h_last, g_ys):
    """Reverse-mode pass of ``scan_chunks`` from saved chunk-start states.

    ``h_starts`` holds the state entering each chunk (leading chunk axis). Walking the
    chunks backwards, each chunk is recomputed from its start state and pulled back
    with ``jax.vjp``; the state cotangent flows from chunk to chunk and the cotangent
    of ``shared`` is summed. Returns ``(g_shared, g_h0, g_xs)``.
    """

    def step(carry, inputs):
        g_shared, g_h = carry
        h, x, n, g_y = inputs
        _, pull = jax.vjp(lambda s, h_, x_: body(s, h_, x_, n), shared, h, x)
        gs, gh, gx = pull((g_h, g_y))
        return (jax.tree.map(jnp.add, g_shared, gs), gh), gx

    zeros = jax.tree.map(jnp.zeros_like, shared)
    (g_shared, g_h0), g_xs = jax.lax.scan(
        step, (zeros, g_h_last), (h_starts, xs, valid, g_ys), reverse=True
    )
    return g_shared, g_h0, g_xs


def scan_in_chunks(body: Callable, shared, h0, xs, chunk: int, fills=None):
    """The chunked form of a recurrence: ``xs`` ``[B, L, ...]`` -> ``(ys [B, L, ...], h_last)``.

    Inputs are cast to float32 and padded with ``fills`` (a pytree like ``xs``; None:
    zeros) up to a multiple of ``chunk``.
    """
    length = _length(xs)
    chunks = _chunk_all(xs, length, chunk, fills)
    h_last, ys = scan_chunks(body, shared, h0, chunks, valid_counts(length, chunk))
    return _unchunk_all(ys, length), h_last


def recompute_vjp(forward: Callable, body: Callable, block_t: int, fills=None) -> Callable:
    """``f(shared, h0, xs) -> (ys, h_last)`` whose forward pass is ``forward`` (a Pallas
    kernel) and whose backward pass recomputes each time block with ``body``.

    ``forward(shared, h0, xs) -> (ys, h_last, starts)``, where ``starts`` is like
    ``h0`` with a block axis after the batch axis: the state entering each block of
    ``block_t`` steps. Reverse-mode autodiff then keeps only the inputs and those
    states; the backward walks the blocks from the last, recomputing one block at a
    time from its start state (``scan_chunks_vjp``). ``h0`` must be float32 (the
    kernels' state); the cotangents of ``shared`` and ``xs`` come back in their dtypes.
    """

    @jax.custom_vjp
    def f(shared, h0, xs):
        ys, h_last, _ = forward(shared, h0, xs)
        return ys, h_last

    def f_fwd(shared, h0, xs):
        ys, h_last, starts = forward(shared, h0, xs)
        return (ys, h_last), (shared, xs, starts)

    def f_bwd(residuals, cotangents):
        shared, xs, starts = residuals
        g_ys, g_h_last = cotangents
        length = _length(xs)
        g_shared, g_h0, g_xs = scan_chunks_vjp(
            body,
            jax.tree.map(lambda s: s.astype(F32), shared),
            jax.tree.map(lambda s: rearrange(s, "b n ... -> n b ..."), starts),
            _chunk_all(xs, length, block_t, fills),
            valid_counts(length, block_t),
            jax.tree.map(lambda g: g.astype(F32), g_h_last),
            _chunk_all(g_ys, length, block_t),
        )
        like = lambda g, x: g.astype(x.dtype)
        g_xs = jax.tree.map(like, _unchunk_all(g_xs, length), xs)
        return jax.tree.map(like, g_shared, shared), g_h0, g_xs

    f.defvjp(f_fwd, f_bwd)
    return f


def combine_linear(left, right):
    """Composition of the maps h -> a h + b (``left`` applied first): the operator that
    makes h_t = a_t h_{t-1} + b_t an associative scan (Blelloch 1990, "Prefix Sums and
    Their Applications")."""
    a_l, b_l = left
    a_r, b_r = right
    return a_l * a_r, a_r * b_l + b_r


def merge_log_sums(a, b):
    """Add two scaled sums ``(num, den, max)``, each meaning ``(num e^max, den e^max)``.

    Both are rescaled by the larger max, so no exponential overflows (the RWKV-4 CUDA
    kernel's aa, bb, pp update). Associative, with ``(0, 0, -large)`` as identity.
    """
    q = jnp.maximum(a[2], b[2])
    e_a, e_b = jnp.exp(a[2] - q), jnp.exp(b[2] - q)
    return e_a * a[0] + e_b * b[0], e_a * a[1] + e_b * b[1], q
