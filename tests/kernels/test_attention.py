"""Attention implementations vs the einsum reference (itself vs NumPy), RoPE, the KV cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention as A

B, L, H, DH = 2, 5, 2, 4


def qkv(seed=0, length=L):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(kk, (B, length, H, DH)) for kk in keys)


def padding_mask():
    return jnp.asarray([[True] * L, [True] * 3 + [False] * (L - 3)])  # right padding


def numpy_attention(q, k, v, keep):
    """softmax(q.k / sqrt(d)) v over the kept keys, one (batch, head, query) at a time."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            for i in range(q.shape[1]):
                cols = [j for j in range(k.shape[1]) if keep[b, i, j]]
                logits = np.array([q[b, i, h] @ k[b, j, h] for j in cols]) / np.sqrt(q.shape[-1])
                p = np.exp(logits - logits.max())
                out[b, i, h] = (p / p.sum()) @ v[b, cols, h]
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_reference_matches_numpy(causal, masked):
    q, k, v = qkv()
    mask = padding_mask() if masked else None
    keep = np.ones((B, L, L), bool)
    if causal:
        keep &= np.tril(np.ones((L, L), bool))
    if masked:
        keep &= np.asarray(mask)[:, None, :]
    got = A.attention(q, k, v, causal=causal, mask=mask, impl="reference")
    np.testing.assert_allclose(got, numpy_attention(q, k, v, keep), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["xla", "jax", "auto"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_impls_match_reference(impl, causal, masked):
    q, k, v = qkv(1)
    mask = padding_mask() if masked else None
    want = A.attention(q, k, v, causal=causal, mask=mask, impl="reference")
    got = A.attention(q, k, v, causal=causal, mask=mask, impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_cudnn_matches_reference(causal):
    q, k, v = (a.astype(jnp.bfloat16) for a in qkv(2, length=128))
    q, k, v = (jnp.concatenate([a] * 16, axis=-1) for a in (q, k, v))  # head_dim 64
    want = A.attention(q, k, v, causal=causal, impl="reference").astype(jnp.float32)
    got = A.attention(q, k, v, causal=causal, impl="cudnn").astype(jnp.float32)
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)  # bf16 inputs


def test_rope_preserves_norms():
    x = qkv(3)[0]
    y = A.rope(x, jnp.arange(L) + 11)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    assert not np.allclose(y, x)  # it does rotate


def test_rope_dot_products_depend_on_relative_position_only():
    a, b, _ = qkv(4, length=1)
    positions = jnp.arange(12)
    qs = A.rope(jnp.repeat(a, 12, axis=1), positions)  # the same vector at every position
    ks = A.rope(jnp.repeat(b, 12, axis=1), positions)
    dots = jnp.einsum("bmhd,bnhd->bhmn", qs, ks)
    for m, n, m2, n2 in [(3, 1, 9, 7), (0, 5, 6, 11), (4, 4, 10, 10)]:
        np.testing.assert_allclose(dots[..., m, n], dots[..., m2, n2], rtol=1e-4, atol=1e-5)
    assert not np.allclose(dots[..., 3, 1], dots[..., 1, 3])  # but on its sign, yes


def test_rope_batched_positions_equal_shared_ones():
    x = qkv(5)[0]
    shared = A.rope(x, jnp.arange(L))
    batched = A.rope(x, jnp.tile(jnp.arange(L), (B, 1)))
    np.testing.assert_allclose(batched, shared, rtol=1e-6)


@pytest.mark.parametrize("split", [1, 3])
def test_kv_cache_prefill_and_step_equal_causal_attention(split):
    q, k, v = qkv(6)
    want = A.attention(q, k, v, causal=True, impl="reference")
    max_len = 8  # larger than L: the empty tail must stay invisible
    cache_k = cache_v = jnp.zeros((B, max_len, H, DH))
    cache_k, cache_v = A.cache_update(cache_k, cache_v, k[:, :split], v[:, :split], 0)
    head = A.attend_cache(q[:, :split], cache_k, cache_v, split)
    outs = [head]
    for t in range(split, L):
        cache_k, cache_v = A.cache_update(cache_k, cache_v, k[:, t], v[:, t], t)
        outs.append(A.attend_cache(q[:, t], cache_k, cache_v, t + 1)[:, None])
    np.testing.assert_allclose(jnp.concatenate(outs, 1), want, rtol=1e-5, atol=1e-6)


def test_prefill_chunk_at_an_offset_under_jit():
    q, k, v = qkv(7)
    want = A.attention(q, k, v, causal=True, impl="reference")

    @jax.jit
    def chunk(cache_k, cache_v, pos):
        cache_k, cache_v = A.cache_update(cache_k, cache_v, k[:, 2:], v[:, 2:], pos)
        return A.attend_cache(q[:, 2:], cache_k, cache_v, pos + 3)

    cache_k, cache_v = A.cache_update(
        jnp.zeros((B, 6, H, DH)), jnp.zeros((B, 6, H, DH)), k[:, :2], v[:, :2], 0
    )
    got = chunk(cache_k, cache_v, jnp.int32(2))
    np.testing.assert_allclose(got, want[:, 2:], rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_with_a_sentence():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="unknown impl"):
        A.attention(q, k, v, causal=True, impl="flash9")
    with pytest.raises(ValueError, match=r"\[batch, length, heads, head_dim\]"):
        A.attention(q[..., 0], k, v, causal=True)
    with pytest.raises(ValueError, match="boolean"):
        A.attention(q, k, v, causal=True, mask=jnp.ones((B, L)))
    with pytest.raises(ValueError, match="key-padding"):
        A.attention(q, k, v, causal=True, mask=jnp.ones((B, L + 1), bool))
    with pytest.raises(ValueError, match="even"):
        A.rope(q[..., :3], jnp.arange(L))
