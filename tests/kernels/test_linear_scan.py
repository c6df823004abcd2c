"""linear_scan: every implementation against the lax.scan reference and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels.linear_scan import linear_scan

# chunked and pallas are checked against sequential in test_impls.py.
CORE = ["sequential", "associative"]

TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def inputs(length, dtype=jnp.float32, channels=(3,), seed=0):
    ka, kb, kh = jax.random.split(jax.random.key(seed), 3)
    shape = (2, length, *channels)
    a = jax.random.uniform(ka, shape, minval=0.5, maxval=1.0).astype(dtype)
    b = jax.random.normal(kb, shape).astype(dtype)
    h0 = jax.random.normal(kh, (2, *channels)).astype(dtype)
    return a, b, h0


def numpy_scan(a, b, h0, reverse=False):
    dtype = np.complex128 if np.iscomplexobj(np.asarray(b)) else np.float64
    a, b, h = (np.asarray(x).astype(dtype) for x in (a, b, h0))
    out = np.zeros_like(b)
    order = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    for t in order:
        h = a[:, t] * h + b[:, t]
        out[:, t] = h
    return out, h


@pytest.mark.parametrize("impl", CORE)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("length", [1, 5, 64])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_numpy(impl, dtype, length, reverse):
    a, b, h0 = inputs(length, dtype)
    hs, h_last = linear_scan(a, b, h0, reverse=reverse, impl=impl)
    ref_hs, ref_last = numpy_scan(a, b, h0, reverse)
    tol = TOL[dtype] * (10 if dtype == jnp.bfloat16 and length == 64 else 1)
    np.testing.assert_allclose(np.asarray(hs, np.float32), ref_hs, atol=tol, rtol=tol)
    np.testing.assert_allclose(np.asarray(h_last, np.float32), ref_last, atol=tol, rtol=tol)


@pytest.mark.parametrize("impl", CORE)
def test_gradients_match_sequential(impl):
    a, b, h0 = inputs(9)
    w = jax.random.normal(jax.random.key(5), b.shape)

    def loss(impl):
        return lambda a, b, h0: jnp.sum(w * linear_scan(a, b, h0, impl=impl)[0])

    ref = jax.grad(loss("sequential"), argnums=(0, 1, 2))(a, b, h0)
    got = jax.grad(loss(impl), argnums=(0, 1, 2))(a, b, h0)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)
    check_grads(loss(impl), (a, b, h0), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("impl", CORE)
def test_two_halves_equal_the_whole(impl):
    a, b, h0 = inputs(10, channels=(2, 3))
    whole, last = linear_scan(a, b, h0, impl=impl)
    first, mid = linear_scan(a[:, :4], b[:, :4], h0, impl=impl)
    second, last2 = linear_scan(a[:, 4:], b[:, 4:], mid, impl=impl)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-6)
    np.testing.assert_allclose(last2, last, atol=1e-6)


def test_complex_and_broadcast_a():
    a = jnp.exp(jnp.asarray([-0.1 + 0.5j, -0.3 - 0.2j]))[None, None]  # [1, 1, 2]
    b = jax.random.normal(jax.random.key(0), (2, 6, 2)) * (1 + 1j)
    seq, _ = linear_scan(a, b, impl="sequential")
    par, _ = linear_scan(a, b, impl="associative")
    np.testing.assert_allclose(par, seq, atol=1e-5)
    ref, _ = numpy_scan(np.broadcast_to(a, b.shape), b, np.zeros((2, 2)))
    np.testing.assert_allclose(seq, ref, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown impl='fast'; valid: associative"):
        linear_scan(*inputs(3)[:2], impl="fast")
    with pytest.raises(ValueError, match="h0 must be"):
        linear_scan(*inputs(3)[:2], jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="does not broadcast"):
        linear_scan(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="b must be"):
        linear_scan(jnp.ones(3), jnp.ones(3))
    # Validation is the public function's, whatever the impl.
    with pytest.raises(ValueError, match="h0 must be"):
        linear_scan(*inputs(3)[:2], jnp.zeros((2, 4)), impl="chunked")
