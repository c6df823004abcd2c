"""Blockwise softmax attention: memory linear in length, the masked half skipped.

The online softmax of Milakov & Gimelshein (2018) run block by block, as in
FlashAttention-2 (Dao 2023, algorithms 1 and 2) and Rabe & Staats (2021, "Self-attention
does not need O(n^2) memory"): the forward pass keeps, per query row, the running max
``m``, the running sum ``l`` and the unnormalised output, and saves only the output,
``m`` and ``l``; the backward pass (a ``custom_vjp``) recomputes each block's
probabilities from them instead of storing the [L, L] matrix. A causal query
block visits only the key blocks at or before it, so the work is the useful half of the
square, not all of it. Plain JAX (``lax`` loops), so it runs on every backend; on CPU it
is what ``attention(impl="auto")`` uses for causal self-attention (``kernels.attention``).

Masks: ``causal`` and a key-padding mask ``[batch, 1, 1, k_len]`` (True = attend). A row
whose every key is masked gets finite output (the mean of the values of the blocks it
visited) where the reference averages all values: such a row carries no information
either way.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

BLOCK = 256  # rows and columns per block; ``bench attention`` measures other sizes


def _neg(dtype=jnp.float32) -> float:
    return -0.7 * float(jnp.finfo(dtype).max)  # as kernels.attention: finite, no NaN


def _pad_to(x, length: int, axis: int):
    pad = length - x.shape[axis]
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _block_logits(q_i, k_j, keep_j, i, j, *, causal, scale, block):
    """Scaled scores of query block i against key block j, masked ([B, H, bq, bk])."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j) * scale
    keep = keep_j[:, None, None, :]  # key padding (and the padded tail)
    if causal:
        rows = i * block + jnp.arange(block)
        cols = j * block + jnp.arange(block)
        keep = keep & (cols[None, :] <= rows[:, None])
    return jnp.where(keep, s, _neg()), keep


def _n_visible(i, causal: bool, n_k: int):
    """Key blocks query block i needs: 0..i when causal (square blocks), else all."""
    return jnp.minimum(i + 1, n_k) if causal else n_k


def _forward(q, k, v, keep, *, causal, scale, block):
    """q, k, v: [B, H, L, D] float32, padded to whole blocks; keep: [B, Lk] bool.
    Returns out [B, H, Lq, D] and the softmax statistics (m, l) [B, H, Lq]: the row max
    and the sum of exp(s - m). They are kept apart, not as logsumexp = m + log l: for a
    row whose every key is masked m is about -2.4e38, and m + log l rounds back to m."""
    b, h, lq, d = q.shape
    n_q, n_k = lq // block, k.shape[2] // block
    kb = k.reshape(b, h, n_k, block, d)
    vb = v.reshape(b, h, n_k, block, d)
    keepb = keep.reshape(b, n_k, block)

    def query_block(i):
        q_i = jax.lax.dynamic_slice_in_dim(q, i * block, block, axis=2)

        def visit(j, carry):
            m, l, acc = carry
            s, _ = _block_logits(
                q_i, kb[:, :, j], keepb[:, j], i, j, causal=causal, scale=scale, block=block
            )
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            l = l * corr + p.sum(-1)
            acc = acc * corr[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, vb[:, :, j])
            return m_new, l, acc

        init = (
            jnp.full((b, h, block), -jnp.inf, jnp.float32),
            jnp.zeros((b, h, block), jnp.float32),
            jnp.zeros((b, h, block, d), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(0, _n_visible(i, causal, n_k), visit, init)
        return acc / l[..., None], m, l

    out, m, l = jax.lax.map(query_block, jnp.arange(n_q))  # [n_q, B, H, block, ...]
    out = jnp.moveaxis(out, 0, 2).reshape(b, h, lq, d)
    m, l = (jnp.moveaxis(x, 0, 2).reshape(b, h, lq) for x in (m, l))
    return out, (m, l)


def _backward(q, k, v, keep, out, stats, d_out, *, causal, scale, block):
    """Gradients w.r.t. q, k, v (FlashAttention-2 algorithm 2): for each key block, the
    query blocks that see it recompute P = exp(S - m) / l."""
    m, l = stats
    b, h, lq, d = q.shape
    n_q, n_k = lq // block, k.shape[2] // block
    delta = jnp.sum(d_out * out, axis=-1)  # D_i = rowsum(dO o O)
    qb = q.reshape(b, h, n_q, block, d)
    dob = d_out.reshape(b, h, n_q, block, d)
    mb = m.reshape(b, h, n_q, block)
    inv_lb = (1.0 / l).reshape(b, h, n_q, block)
    deltab = delta.reshape(b, h, n_q, block)
    keepb = keep.reshape(b, n_k, block)

    def key_block(d_q, j):
        k_j = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=2)
        v_j = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)

        def visit(i, carry):
            d_q, d_k, d_v = carry
            q_i, do_i = qb[:, :, i], dob[:, :, i]
            s, kept = _block_logits(
                q_i, k_j, keepb[:, j], i, j, causal=causal, scale=scale, block=block
            )
            p = jnp.exp(s - mb[:, :, i][..., None]) * inv_lb[:, :, i][..., None]
            d_v = d_v + jnp.einsum("bhqk,bhqd->bhkd", p, do_i)
            dp = jnp.einsum("bhqd,bhkd->bhqk", do_i, v_j)
            ds = jnp.where(kept, p * (dp - deltab[:, :, i][..., None]), 0.0) * scale
            d_k = d_k + jnp.einsum("bhqk,bhqd->bhkd", ds, q_i)
            dq_i = jax.lax.dynamic_slice_in_dim(d_q, i * block, block, axis=2)
            dq_i = dq_i + jnp.einsum("bhqk,bhkd->bhqd", ds, k_j)
            return jax.lax.dynamic_update_slice_in_dim(d_q, dq_i, i * block, axis=2), d_k, d_v

        zeros = jnp.zeros((b, h, block, d), jnp.float32)
        first = j if causal else 0  # causal: query blocks before j never see key block j
        d_q, d_k, d_v = jax.lax.fori_loop(first, n_q, visit, (d_q, zeros, zeros))
        return d_q, (d_k, d_v)

    d_q, (d_k, d_v) = jax.lax.scan(key_block, jnp.zeros_like(q), jnp.arange(n_k))
    d_k = jnp.moveaxis(d_k, 0, 2).reshape(b, h, n_k * block, d)
    d_v = jnp.moveaxis(d_v, 0, 2).reshape(b, h, n_k * block, d)
    return d_q, d_k, d_v


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, keep, causal, scale, block):
    return _forward(q, k, v, keep, causal=causal, scale=scale, block=block)[0]


def _attention_fwd(q, k, v, keep, causal, scale, block):
    out, stats = _forward(q, k, v, keep, causal=causal, scale=scale, block=block)
    return out, (q, k, v, keep, out, stats)


def _attention_bwd(causal, scale, block, residuals, d_out):
    q, k, v, keep, out, stats = residuals
    grads = _backward(q, k, v, keep, out, stats, d_out, causal=causal, scale=scale, block=block)
    return (*grads, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def key_padding(mask, batch: int, k_len: int):
    """``[batch, k_len]`` keep flags from a mask that only masks keys, or None if the
    mask is anything else (per-query or per-head masks need another implementation)."""
    if mask is None:
        return jnp.ones((batch, k_len), bool)
    if mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[2] == 1:
        return jnp.broadcast_to(mask[:, 0, 0, :], (batch, k_len))
    return None


def blockwise_attention(
    q: Float[Array, "batch q_len heads head_dim"],
    k: Float[Array, "batch k_len heads head_dim"],
    v: Float[Array, "batch k_len heads head_dim"],
    *,
    causal: bool,
    mask: Bool[Array, "batch 1 1 k_len"] | None = None,
    scale: float | None = None,
    block: int = BLOCK,
) -> Float[Array, "batch q_len heads head_dim"]:
    """softmax(q k^T scale + masks) v, block by block (see the module docstring).

    ``causal`` needs q_len == k_len (self-attention); ``mask`` may only mask keys.
    """
    batch, q_len, _, head_dim = q.shape
    k_len = k.shape[1]
    if causal and q_len != k_len:
        raise ValueError(
            f"blockwise attention: causal needs q_len == k_len, got {q_len} and {k_len}; "
            "use impl='jax' for a query chunk against a cache"
        )
    keep = key_padding(mask, batch, k_len)
    if keep is None:
        raise ValueError(
            "blockwise attention takes a key-padding mask [batch, 1, 1, k_len] only; "
            f"got a mask of shape {mask.shape}: use impl='jax'"
        )
    scale = head_dim**-0.5 if scale is None else float(scale)
    block = min(block, max(q_len, k_len))
    whole = lambda n: -(-n // block) * block  # noqa: E731 - rounded up to whole blocks

    def to_bhld(x):
        return _pad_to(jnp.swapaxes(x, 1, 2).astype(jnp.float32), whole(x.shape[1]), 2)

    keep = _pad_to(keep, whole(k_len), 1)  # padded keys: False
    out = _attention(to_bhld(q), to_bhld(k), to_bhld(v), keep, causal, scale, block)
    return jnp.swapaxes(out[:, :, :q_len], 1, 2).astype(q.dtype)
