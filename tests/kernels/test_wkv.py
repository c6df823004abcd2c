"""wkv4: every implementation against a float64 NumPy re-derivation of RWKV eq. 14."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels.wkv import WKVState, empty_state, wkv4

# chunked and pallas are checked against sequential in test_impls.py.
CORE = ["sequential", "associative"]


def inputs(length, dtype=jnp.float32, channels=3, key_scale=1.0, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    w = -jnp.exp(jax.random.normal(k[0], (channels,)))
    u = jax.random.normal(k[1], (channels,))
    keys = (key_scale * jax.random.normal(k[2], (2, length, channels))).astype(dtype)
    values = jax.random.normal(k[3], (2, length, channels)).astype(dtype)
    return w, u, keys, values


def numpy_wkv(w, u, k, v):
    """Eq. 14 literally: explicit sums over the history, float64, no stabilisation."""
    w, u, k, v = (np.asarray(x, np.float64) for x in (w, u, k, v))
    out = np.zeros_like(v)
    for t in range(k.shape[1]):
        i = np.arange(t)
        weights = np.exp((t - 1 - i)[None, :, None] * w + k[:, :t])
        bonus = np.exp(u + k[:, t])
        num = (weights * v[:, :t]).sum(1) + bonus * v[:, t]
        den = weights.sum(1) + bonus
        out[:, t] = num / den
    return out


def logspace_wkv(w, u, k, v):
    """The same sums in log space (float64): valid for any key size."""
    w, u, k, v = (np.asarray(x, np.float64) for x in (w, u, k, v))
    out = np.zeros_like(v)
    for t in range(k.shape[1]):
        i = np.arange(t)
        logits = np.concatenate(
            [(t - 1 - i)[None, :, None] * w + k[:, :t], (u + k[:, t])[:, None]], axis=1
        )
        weights = np.exp(logits - logits.max(1, keepdims=True))
        values = np.concatenate([v[:, :t], v[:, t : t + 1]], axis=1)
        out[:, t] = (weights * values).sum(1) / weights.sum(1)
    return out


@pytest.mark.parametrize("impl", CORE)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("length", [1, 5, 64])
def test_matches_numpy(impl, dtype, length):
    w, u, k, v = inputs(length, dtype)
    y, _ = wkv4(w, u, k, v, impl=impl)
    assert y.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), numpy_wkv(w, u, k, v), atol=tol, rtol=tol)


@pytest.mark.parametrize("impl", CORE)
def test_state_continuation(impl):
    w, u, k, v = inputs(11)
    whole, last = wkv4(w, u, k, v, impl=impl)
    y1, mid = wkv4(w, u, k[:, :4], v[:, :4], impl=impl)
    y2, last2 = wkv4(w, u, k[:, 4:], v[:, 4:], mid, impl=impl)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), whole, atol=1e-5)
    # (num, den, max) is unique only up to a common scale: compare num/den and the log-mass.
    for a, b in ((last, last2),):
        np.testing.assert_allclose(a[0] / a[1], b[0] / b[1], atol=1e-5)
        np.testing.assert_allclose(jnp.log(a[1]) + a[2], jnp.log(b[1]) + b[2], atol=1e-4)


@pytest.mark.parametrize("impl", CORE)
def test_gradients_match_sequential(impl):
    w, u, k, v = inputs(7)
    proj = jax.random.normal(jax.random.key(9), k.shape)

    def loss(impl):
        return lambda w, u, k, v: jnp.sum(proj * wkv4(w, u, k, v, impl=impl)[0])

    ref = jax.grad(loss("sequential"), argnums=(0, 1, 2, 3))(w, u, k, v)
    got = jax.grad(loss(impl), argnums=(0, 1, 2, 3))(w, u, k, v)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
    check_grads(loss(impl), (w, u, k, v), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("impl", CORE)
def test_large_keys_long_sequence_are_stable(impl):
    """|k| up to 100 at length 4096: exp(100) overflows float32; the result must not."""
    w, u, k, v = inputs(4096, channels=2, key_scale=40.0)
    k = jnp.clip(k, -100.0, 100.0)
    assert float(jnp.abs(k).max()) > 88.0  # beyond float32's exp range
    y, state = jax.jit(functools.partial(wkv4, impl=impl))(w, u, k, v)  # eager is slow here
    assert np.isfinite(np.asarray(y)).all()
    assert all(np.isfinite(np.asarray(s)).all() for s in state)
    sl = slice(0, 4096, 97)  # a sample of positions against the float64 log-space sums
    np.testing.assert_allclose(
        np.asarray(y)[:, sl], logspace_wkv(w, u, k, v)[:, sl], atol=1e-4, rtol=1e-4
    )


def test_bad_input():
    w, u, k, v = inputs(3)
    with pytest.raises(ValueError, match="w and u must be"):
        wkv4(w[:2], u, k, v)
    with pytest.raises(ValueError, match="unknown impl"):
        wkv4(w, u, k, v, impl="cuda")
    with pytest.raises(ValueError, match=r"k and v must both be \[batch, length, channels\]"):
        wkv4(w, u, k, v[:, :2])
    with pytest.raises(ValueError, match="state must be a WKVState"):
        wkv4(w, u, k, v, empty_state(2, 3)[:2])
    # Validation is the public function's, whatever the impl.
    with pytest.raises(ValueError, match=r"w and u must be \[channels\]"):
        wkv4(jnp.ones(4), u, k, v, impl="chunked")


def test_state_is_a_wkv_state():
    w, u, k, v = inputs(5)
    empty = empty_state(2, 3)
    assert isinstance(empty, WKVState) and empty.max.dtype == jnp.float32
    y, state = wkv4(w, u, k, v, empty)
    assert isinstance(state, WKVState)
    # A plain (num, den, max) tuple is accepted and gives the same result.
    y2, state2 = wkv4(w, u, k, v, tuple(empty))
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(state2.num, state.num)
