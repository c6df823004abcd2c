"""RWKV-6 (Finch) WKV: a matrix-valued state per head with a data-dependent decay
(Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic
Recurrence", section 4, eqs. 19-20; BlinkDL/RWKV-LM ``RWKV-v5/cuda/wkv6_cuda.cu``)::

    y_t = r_t (diag(u) k_t^T v_t + S_{t-1})
    S_t = diag(w_t) S_{t-1} + k_t^T v_t

per head: r_t, k_t, w_t, u [N] (keys), v_t [N] (values), S_t [N, N]; w_t = exp(-exp(.)) in
(0, 1) is given here as ``log_w`` = log w_t <= 0. Implementations:

- "sequential": ``lax.scan`` over t, the reference;
- "chunked": within a chunk of T steps the outputs from earlier steps of the chunk are a
  [T, T] matrix of decayed r.k products, built from the exact per-channel decay ratios
  exp(sum of log w between s and t) <= 1 (never a product of a growing and a shrinking
  factor, so no overflow for strong decays); between chunks the state is passed on.

Everything is accumulated in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from jaxtyping import Array, Float

from kernels import chunking, dispatch

F32 = jnp.float32


def _sequential(r, k, v, log_w, u, s0):
    def step(s, inputs):
        r_t, k_t, v_t, lw_t = inputs  # [B, H, N] each
        kv = k_t[..., :, None] * v_t[..., None, :]  # [B, H, N, N]
        y = jnp.einsum("bhn,bhnm->bhm", r_t, u[..., None] * kv + s)
        return jnp.exp(lw_t)[..., None] * s + kv, y

    move = lambda z: jnp.moveaxis(z, 1, 0)  # noqa: E731
    s_last, ys = jax.lax.scan(step, s0, tuple(move(z) for z in (r, k, v, log_w)))
    return jnp.moveaxis(ys, 0, 1), s_last


def _chunked(r, k, v, log_w, u, s0, *, chunk_size: int = 16):
    chunking.check_chunk("chunk_size", chunk_size)
    length = r.shape[1]
    padded = [chunking.pad_time(z, length + (-length % chunk_size)) for z in (r, k, v, log_w)]
    r, k, v, log_w = (rearrange(z, "b (c t) h n -> c b h t n", t=chunk_size) for z in padded)
    strict = jnp.tril(jnp.ones((chunk_size, chunk_size), bool), -1)  # s < t

    def chunk(s, inputs):
        r_c, k_c, v_c, lw_c = inputs  # [B, H, T, N]
        cum = jnp.cumsum(lw_c, axis=2)  # log of w_1 ... w_t (inclusive)
        before = cum - lw_c  # log of w_1 ... w_{t-1}: the decay S_0 has seen at t
        # decay from just after s to just before t: exp(before_t - cum_s) <= 1 for s < t
        gap = before[..., :, None, :] - cum[..., None, :, :]  # [B, H, t, s, N]
        ratio = jnp.exp(jnp.where(strict[..., None], gap, -jnp.inf))
        scores = jnp.einsum("bhtn,bhsn,bhtsn->bhts", r_c, k_c, ratio)
        bonus = jnp.einsum("bhtn,bhtn->bht", r_c, u[:, None] * k_c)
        y = jnp.einsum("bhts,bhsm->bhtm", scores, v_c) + bonus[..., None] * v_c
        y = y + jnp.einsum("bhtn,bhnm->bhtm", r_c * jnp.exp(before), s)
        to_end = jnp.exp(cum[..., -1:, :] - cum)  # decay from after s to the chunk's end
        s = jnp.exp(cum[..., -1, :])[..., None] * s + jnp.einsum(
            "bhsn,bhsm->bhnm", k_c * to_end, v_c
        )
        return s, y

    s_last, ys = jax.lax.scan(chunk, s0, (r, k, v, log_w))
    return rearrange(ys, "c b h t m -> b (c t) h m")[:, :length], s_last


IMPLS = {"sequential": _sequential, "chunked": _chunked}
# Chunked everywhere: on CPU the scan's backward pass, which keeps an [N, N] state per
# step, costs 3-12x the chunked one's (docs/benchmarks.md, "WKV-6 on CPU"); the scan's
# forward is only 1.0-1.4x faster.
AUTO = {"default": "chunked"}


def wkv6(
    r: Float[Array, "batch length heads n"],
    k: Float[Array, "batch length heads n"],
    v: Float[Array, "batch length heads n"],
    log_w: Float[Array, "batch length heads n"],
    u: Float[Array, "heads n"],
    s0: Float[Array, "batch heads n n"] | None = None,
    *,
    impl: str = "auto",
    **options,
) -> tuple[Float[Array, "batch length heads n"], Float[Array, "batch heads n n"]]:
    """y (float32) and the last state. ``log_w`` <= 0; ``options``: ``chunk_size``."""
    if not (r.shape == k.shape == v.shape == log_w.shape) or r.ndim != 4:
        raise ValueError(
            "wkv6: r, k, v and log_w must share one [batch, length, heads, head_size] shape; "
            f"got {r.shape}, {k.shape}, {v.shape}, {log_w.shape}"
        )
    if u.shape != r.shape[2:]:
        raise ValueError(f"wkv6: u must be [heads, head_size]={r.shape[2:]}, got {u.shape}")
    batch, _, heads, n = r.shape
    s0 = jnp.zeros((batch, heads, n, n), F32) if s0 is None else s0.astype(F32)
    args = [z.astype(F32) for z in (r, k, v, log_w)]
    return dispatch.call("wkv6", IMPLS, impl, AUTO, *args, u.astype(F32), s0, **options)
