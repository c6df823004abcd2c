"""Softmax attention, rotary position embeddings and the KV-cache step.

``attention`` goes through ``jax.nn.dot_product_attention`` (XLA, or cuDNN flash
attention on NVIDIA GPUs) or, on CPU, the blockwise online-softmax form of
``kernels.blockwise_attention`` (memory linear in length); the einsum-softmax
"reference" implementation is the readable definition the others are tested against.

Layout everywhere: ``[batch, length, heads, head_dim]`` (what jax calls BTNH).
Masks are boolean, ``True`` = may attend, broadcastable to ``[batch, heads, q_len,
k_len]``; a ``[batch, k_len]`` key-padding mask is accepted as a shorthand.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from kernels.blockwise_attention import blockwise_attention, key_padding
from kernels.dispatch import resolve


def _large_negative(dtype) -> float:
    # The value jax's XLA path uses, so that a fully masked row gives the same
    # (uniform) weights in every implementation instead of NaN.
    return -0.7 * float(jnp.finfo(dtype).max)


def _causal_mask(q_len: int, k_len: int, offset=0) -> Bool[Array, "q_len k_len"]:
    """Query i (at absolute position offset + i) sees keys j <= offset + i."""
    return jnp.arange(k_len)[None, :] <= offset + jnp.arange(q_len)[:, None]


def normalise_mask(mask, batch: int, k_len: int):
    """Rank-2 key padding -> rank 4; rank 4 passes; anything else is an error."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"attention: mask must be boolean (True = attend), got {mask.dtype}")
    if mask.ndim == 2:
        if mask.shape != (batch, k_len):
            raise ValueError(
                f"attention: a rank-2 mask is a key-padding mask [batch, k_len]="
                f"{(batch, k_len)}, got {mask.shape}"
            )
        return mask[:, None, None, :]
    if mask.ndim != 4:
        raise ValueError(
            "attention: mask must be [batch, k_len] (key padding) or broadcastable to "
            f"[batch, heads, q_len, k_len]; got rank {mask.ndim}"
        )
    return mask


def attention_reference(
    q,
    k,
    v,
    *,
    causal: bool,
    mask=None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
):
    """softmax(q k^T / sqrt(d) + masks) v, in float32 (Vaswani et al. 2017, eq. 1).

    ``dropout_rate`` > 0 (with ``dropout_rng``) drops attention probabilities, each
    independently, and rescales the kept ones by 1 / (1 - rate): the LRA Transformer's
    ``attention_dropout_rate`` (flax ``SelfAttention`` with ``broadcast_dropout=False``).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    keep = jnp.ones(logits.shape, bool)
    if causal:
        keep = keep & _causal_mask(q.shape[1], k.shape[1])
    if mask is not None:
        keep = keep & mask
    logits = jnp.where(keep, logits, _large_negative(jnp.float32))
    weights = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError("attention_reference: dropout_rate > 0 needs a dropout_rng")
        keep_prob = 1.0 - dropout_rate
        kept = jax.random.bernoulli(dropout_rng, keep_prob, weights.shape)
        weights = jnp.where(kept, weights / keep_prob, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32)).astype(q.dtype)


def _jax_attention(q, k, v, *, causal, mask=None, scale=None, implementation=None):
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, scale=scale, is_causal=causal, implementation=implementation
    )


IMPLS = {
    "reference": attention_reference,
    "jax": _jax_attention,  # jax chooses the implementation (today: XLA)
    "xla": partial(_jax_attention, implementation="xla"),
    "cudnn": partial(_jax_attention, implementation="cudnn"),  # NVIDIA GPU, fp16/bf16
    "blockwise": blockwise_attention,  # online softmax, memory linear in L
}
# CPU: blockwise for causal self-attention (key-padding masks at most). Measured with
# `python run.py bench attention` (docs/benchmarks.md), causal, batch 4, 4 heads of 64,
# 2-core development CPU, blockwise / xla seconds, forward + backward: 0.56 at L = 256,
# 0.27 at 1K, 0.16 at 4K (forward only: 0.64, 0.38, 0.17); xla's [L, L] matrices do not
# fit at 16K. Other backends: jax's choice (cuDNN flash attention on NVIDIA GPUs).
AUTO = {"default": "jax", "cpu": "blockwise"}


def _check_qkv(name: str, q, k, v) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"{name}: q, k, v must be [batch, length, heads, head_dim]; got shapes "
            f"{q.shape}, {k.shape}, {v.shape}"
        )
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(
            f"{name}: k and v must have the same shape, and q the same batch, heads and "
            f"head_dim as k; got q {q.shape}, k {k.shape}, v {v.shape}"
        )


def attention(
    q: Float[Array, "batch q_len heads head_dim"],
    k: Float[Array, "batch k_len heads head_dim"],
    v: Float[Array, "batch k_len heads head_dim"],
    *,
    causal: bool,
    mask: Bool[Array, " ..."] | None = None,
    scale: float | None = None,
    impl: str = "auto",
) -> Float[Array, "batch q_len heads head_dim"]:
    """Multi-head scaled dot-product attention.

    ``causal`` masks key j > query i (top-left aligned); ``mask`` (True = attend) is
    AND-ed with it. ``impl``: "reference" (einsum + softmax), "xla", "cudnn", "jax"
    (jax picks), "blockwise" (``kernels.blockwise_attention``), or "auto": on CPU
    "blockwise" for causal self-attention (see ``AUTO``), else "jax".
    """
    _check_qkv("attention", q, k, v)
    name = resolve("attention", IMPLS, impl, AUTO)
    mask = normalise_mask(mask, q.shape[0], k.shape[1])
    if impl == "auto" and name == "blockwise" and not blockwise_applies(q, k, causal, mask):
        name = "jax"  # a per-query mask or a chunk against a cache (decoding)
    return IMPLS[name](q, k, v, causal=causal, mask=mask, scale=scale)


def blockwise_applies(q, k, causal: bool, mask) -> bool:
    """Whether "auto" should use ``blockwise_attention``: causal self-attention (q_len
    == k_len; a decoding step's query against its cache stays with jax) with at most a
    key-padding mask. Bidirectional attention (the LRA classifiers) skips no blocks and
    is not measured yet, so it stays with jax too."""
    if not causal or q.shape[1] != k.shape[1]:
        return False
    return key_padding(mask, q.shape[0], k.shape[1]) is not None


def rope(
    x: Float[Array, "batch length heads head_dim"],
    positions: Int[Array, " length"] | Int[Array, "batch length"],
    base: float = 10000.0,
) -> Float[Array, "batch length heads head_dim"]:
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34).

    Channel pairs (i, i + head_dim/2) are rotated by angle ``pos * base^(-2i/head_dim)``
    (the "rotate half" layout of GPT-NeoX and HF Llama). A rotation keeps norms, and
    ``rope(q, m) . rope(k, n)`` depends on ``m - n`` only.
    """
    if x.ndim != 4:
        raise ValueError(f"rope: x must be [batch, length, heads, head_dim], got {x.shape}")
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"rope: head_dim={dim} must be even; pick d_model / n_heads even")
    positions = jnp.asarray(positions)
    if positions.ndim == 1:
        positions = positions[None]
    if positions.ndim != 2 or positions.shape[-1] != x.shape[1]:
        raise ValueError(
            f"rope: positions must be [length] or [batch, length] with length={x.shape[1]}, "
            f"got {positions.shape}"
        )
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # [dim/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, L, dim/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def cache_update(
    cache_k: Float[Array, "batch max_len heads head_dim"],
    cache_v: Float[Array, "batch max_len heads head_dim"],
    k_t: Float[Array, "batch heads head_dim"] | Float[Array, "batch chunk heads head_dim"],
    v_t: Float[Array, "batch heads head_dim"] | Float[Array, "batch chunk heads head_dim"],
    pos: Int[Array, ""],
):
    """Write one step (``[B, H, Dh]``) or a chunk (``[B, T, H, Dh]``) at ``pos``.

    ``pos`` may be traced, so ``pos + T > max_len`` cannot be checked here:
    ``dynamic_update_slice`` would clamp the start and overwrite the last entries.
    Callers check lengths they know statically (see ``arch.mixers.attention``).
    """
    if k_t.ndim == 3:
        k_t, v_t = k_t[:, None], v_t[:, None]
    if k_t.shape != v_t.shape or k_t.shape[2:] != cache_k.shape[2:]:
        raise ValueError(
            f"cache_update: new keys/values {k_t.shape}/{v_t.shape} do not fit a cache "
            f"{cache_k.shape} ([batch, max_len, heads, head_dim])"
        )
    start = (0, jnp.asarray(pos, jnp.int32), 0, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k_t.astype(cache_k.dtype), start)
    cache_v = jax.lax.dynamic_update_slice(cache_v, v_t.astype(cache_v.dtype), start)
    return cache_k, cache_v


def attend_cache(
    q_t: Float[Array, "batch heads head_dim"] | Float[Array, "batch chunk heads head_dim"],
    cache_k: Float[Array, "batch max_len heads head_dim"],
    cache_v: Float[Array, "batch max_len heads head_dim"],
    length: Int[Array, ""],
    *,
    scale: float | None = None,
    impl: str = "auto",
):
    """Queries for the last T filled positions attend to the cache.

    ``length`` counts the filled entries, the new ones included (``pos + T`` after
    ``cache_update`` at ``pos``). Query i sits at absolute position ``length - T + i``
    and sees entries ``j <= length - T + i``: a causal mask offset by the start, so
    the empty tail of the fixed-size cache is never read.
    """
    single = q_t.ndim == 3
    q = q_t[:, None] if single else q_t
    _check_qkv("attend_cache", q, cache_k, cache_v)
    if impl == "blockwise":  # a layer built with it: that is for whole sequences
        impl = "jax"
    chunk, max_len = q.shape[1], cache_k.shape[1]
    keep = _causal_mask(chunk, max_len, offset=jnp.asarray(length, jnp.int32) - chunk)
    y = attention(
        q.astype(cache_k.dtype),
        cache_k,
        cache_v,
        causal=False,
        mask=keep[None, None],
        scale=scale,
        impl=impl,
    ).astype(q.dtype)
    return y[:, 0] if single else y
