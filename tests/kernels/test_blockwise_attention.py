"""Blockwise (online-softmax, custom_vjp) attention vs the einsum reference: values and
gradients, impl x dtype x length, the masks it takes, its linear memory, and auto."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention as A
from kernels.blockwise_attention import blockwise_attention

H, DH = 3, 8
TOL = {jnp.float32: dict(rtol=2e-5, atol=2e-5), jnp.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def qkv(length, batch=2, dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(kk, (batch, length, H, DH)).astype(dtype) for kk in keys)


def padding(length, batch=2):
    """Right padding: the second sequence keeps its first ``length - 3`` keys."""
    lengths = jnp.asarray([length, max(1, length - 3)])[:batch]
    return (jnp.arange(length)[None, :] < lengths[:, None])[:, None, None, :]


# Lengths: shorter than a block, whole blocks, and a ragged tail (padded internally).
@pytest.mark.parametrize("length", [5, 32, 45])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("causal,masked", [(True, False), (False, False), (False, True)])
def test_matches_reference_values_and_gradients(length, dtype, causal, masked):
    q, k, v = qkv(length, dtype=dtype)
    mask = padding(length) if masked else None

    def run(impl):
        if impl == "blockwise":
            return lambda *a: blockwise_attention(*a, causal=causal, mask=mask, block=16)
        return lambda *a: A.attention_reference(*a, causal=causal, mask=mask)

    cotangent = jax.random.normal(jax.random.key(3), q.shape)
    tol = TOL[dtype]
    want, got = run("reference")(q, k, v), run("blockwise")(q, k, v)
    assert got.dtype == dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want), **tol)
    grads = {
        impl: jax.grad(
            lambda *a, impl=impl: jnp.sum(run(impl)(*a).astype(jnp.float32) * cotangent),
            argnums=(0, 1, 2),
        )(q, k, v)
        for impl in ("reference", "blockwise")
    }
    for g_block, g_ref in zip(grads["blockwise"], grads["reference"], strict=True):
        np.testing.assert_allclose(np.float32(g_block), np.float32(g_ref), **tol)


def test_causal_with_key_padding_matches_reference():
    q, k, v = qkv(40)
    mask = padding(40)
    got = blockwise_attention(q, k, v, causal=True, mask=mask, block=16)
    want = A.attention_reference(q, k, v, causal=True, mask=mask)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_memory_is_linear_in_length():
    """The compiled gradient's temporaries grow ~2x per 2x length (the reference's
    [L, L] matrices grow 4x), and stay far below one [B, H, L, L] float32 matrix."""

    def temp(length):
        q, k, v = qkv(length, batch=1)
        loss = lambda *a: blockwise_attention(*a, causal=True, block=64).sum()  # noqa: E731
        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

    small, large = temp(1024), temp(2048)
    assert large / small < 2.5
    assert large < 0.25 * H * 2048 * 2048 * 4


def test_auto_uses_blockwise_on_cpu_where_it_applies(monkeypatch):
    calls = []
    real = A.IMPLS["blockwise"]
    monkeypatch.setitem(A.IMPLS, "blockwise", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v = qkv(8)
    A.attention(q, k, v, causal=True, impl="auto")
    A.attention(q, k, v, causal=True, mask=padding(8)[:, 0, 0], impl="auto")
    assert len(calls) == (2 if jax.default_backend() == "cpu" else 0)
    A.attention(q, k, v, causal=False, mask=padding(8)[:, 0, 0], impl="auto")  # unmeasured
    assert len(calls) == (2 if jax.default_backend() == "cpu" else 0)
    # A per-query mask (decoding against a cache) falls back to jax's implementation.
    per_query = jnp.tril(jnp.ones((8, 8), bool))[None, None]
    got = A.attention(q, k, v, causal=False, mask=per_query, impl="auto")
    assert len(calls) == (2 if jax.default_backend() == "cpu" else 0)
    want = A.attention_reference(q, k, v, causal=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # One query against a cache (a decoding step) does too: blocks would pad it to 8.
    A.attention(q[:, -1:], k, v, causal=False, mask=padding(8), impl="auto")
    assert len(calls) == (2 if jax.default_backend() == "cpu" else 0)


def test_fewer_queries_than_keys_when_asked_for():
    q, k, v = qkv(40)
    got = blockwise_attention(q[:, :7], k, v, causal=False, mask=padding(40), block=16)
    want = A.attention_reference(q[:, :7], k, v, causal=False, mask=padding(40))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_unsupported_inputs_name_the_fix():
    q, k, v = qkv(8)
    per_query = jnp.tril(jnp.ones((8, 8), bool))[None, None]
    with pytest.raises(ValueError, match="key-padding mask.*impl='jax'"):
        A.attention(q, k, v, causal=False, mask=per_query, impl="blockwise")
    with pytest.raises(ValueError, match="q_len == k_len"):
        blockwise_attention(q[:, :3], k, v, causal=True)


def test_gradient_of_rows_whose_keys_are_all_masked_matches_its_forward():
    """Left padding under a causal mask leaves the first rows of the second sequence no
    key to attend to. Their output is finite, and the backward pass differentiates the
    forward that produced it: attention is linear in v, so f(v + dv) - f(v) must equal
    the gradient's directional derivative exactly (up to rounding)."""
    q, k, v = qkv(40)
    keep = jnp.arange(40)[None, :] >= jnp.asarray([0, 5])[:, None]  # second: 5 pads first
    mask = keep[:, None, None, :]
    f = lambda v: blockwise_attention(q, k, v, causal=True, mask=mask, block=16)  # noqa: E731
    cotangent = jax.random.normal(jax.random.key(4), q.shape)
    dv = jax.random.normal(jax.random.key(5), v.shape)
    assert bool(jnp.all(jnp.isfinite(f(v))))
    grad_v = jax.grad(lambda v: jnp.sum(f(v) * cotangent))(v)
    finite = jnp.sum((f(v + dv) - f(v)) * cotangent)
    np.testing.assert_allclose(jnp.sum(grad_v * dv), finite, rtol=1e-4, atol=1e-3)
