"""selective_scan: every implementation against a float64 NumPy re-derivation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels.selective_scan import selective_scan

# chunked and pallas are checked against sequential in test_impls.py.
CORE = ["sequential", "associative"]

B_, D_, N_ = 2, 3, 4


def inputs(length, dtype=jnp.float32, seed=0, delta_scale=1.0):
    k = jax.random.split(jax.random.key(seed), 8)
    u = jax.random.normal(k[0], (B_, length, D_)).astype(dtype)
    delta = (delta_scale * jax.random.uniform(k[1], (B_, length, D_), minval=0.1)).astype(dtype)
    A = -jnp.exp(jax.random.normal(k[2], (D_, N_)))
    Bm = jax.random.normal(k[3], (B_, length, N_)).astype(dtype)
    C = jax.random.normal(k[4], (B_, length, N_)).astype(dtype)
    D = jax.random.normal(k[5], (D_,))
    z = jax.random.normal(k[6], (B_, length, D_)).astype(dtype)
    bias = 0.1 * jax.random.normal(k[7], (D_,))
    return u, delta, A, Bm, C, D, z, bias


def numpy_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False, state=None):
    """Mamba eq. (2a)-(2b) with ZOH A / Euler B, one position at a time, in float64."""
    u, delta, A, B, C = (np.asarray(x, np.float64) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, np.float64)
    if softplus:
        delta = np.log1p(np.exp(delta))
    batch, length, d = u.shape
    h = np.zeros((batch, d, A.shape[1])) if state is None else np.asarray(state, np.float64)
    y = np.zeros((batch, length, d))
    for t in range(length):
        for i in range(d):
            h[:, i] = np.exp(delta[:, t, i, None] * A[i]) * h[:, i] + (
                delta[:, t, i, None] * B[:, t] * u[:, t, i, None]
            )
            y[:, t, i] = (h[:, i] * C[:, t]).sum(-1)
    if D is not None:
        y = y + u * np.asarray(D, np.float64)
    if z is not None:
        z = np.asarray(z, np.float64)
        y = y * z / (1 + np.exp(-z))
    return y, h


@pytest.mark.parametrize("impl", CORE)
@pytest.mark.parametrize("length", [1, 5, 64])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matches_numpy(impl, length, dtype):
    u, delta, A, Bm, C, D, z, bias = inputs(length, dtype)
    y, h = selective_scan(u, delta, A, Bm, C, D, z, bias, True, impl=impl)
    ref_y, ref_h = numpy_reference(u, delta, A, Bm, C, D, z, bias, True)
    assert y.dtype == dtype and h.dtype == jnp.float32
    tol = 1e-4 if dtype == jnp.float32 else 5e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), ref_y, atol=tol, rtol=tol)
    np.testing.assert_allclose(h, ref_h, atol=tol, rtol=tol)


@pytest.mark.parametrize("impl", CORE)
def test_state_continuation_and_optional_args(impl):
    u, delta, A, Bm, C, *_ = inputs(9)
    whole, last = selective_scan(u, delta, A, Bm, C, impl=impl)
    y1, mid = selective_scan(u[:, :4], delta[:, :4], A, Bm[:, :4], C[:, :4], impl=impl)
    y2, last2 = selective_scan(u[:, 4:], delta[:, 4:], A, Bm[:, 4:], C[:, 4:], state=mid, impl=impl)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), whole, atol=1e-5)
    np.testing.assert_allclose(last2, last, atol=1e-5)
    ref, _ = numpy_reference(u, delta, A, Bm, C)
    np.testing.assert_allclose(whole, ref, atol=1e-4)


@pytest.mark.parametrize("impl", CORE)
def test_gradients_match_sequential(impl):
    args = inputs(7)
    w = jax.random.normal(jax.random.key(3), args[0].shape)

    def loss(impl):
        def f(u, delta, A, Bm, C, D, z, bias):
            return jnp.sum(w * selective_scan(u, delta, A, Bm, C, D, z, bias, True, impl=impl)[0])

        return f

    argnums = tuple(range(8))
    ref = jax.grad(loss("sequential"), argnums)(*args)
    got = jax.grad(loss(impl), argnums)(*args)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
    check_grads(loss(impl), args, order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("impl", CORE)
@pytest.mark.parametrize("scale", [1e-6, 1e3])
def test_extreme_step_sizes(impl, scale):
    u, delta, A, Bm, C, D, z, _ = inputs(16, delta_scale=scale)
    y, h = selective_scan(u, delta, A, Bm, C, D, z, impl=impl)
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(h)).all()
    ref_y, _ = numpy_reference(u, delta, A, Bm, C, D, z)
    np.testing.assert_allclose(y, ref_y, atol=1e-3 * max(1.0, scale), rtol=1e-3)


def test_bad_shapes():
    u, delta, A, Bm, C, *_ = inputs(4)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(u, delta, A, Bm[:, :2], C)
    with pytest.raises(ValueError, match=r"u must be \[batch, length, d_inner\]"):
        selective_scan(u[0], delta, A, Bm, C)
    with pytest.raises(ValueError, match=r"A must be \[d_inner, d_state\] with d_inner = 3"):
        selective_scan(u, delta, A.T, Bm, C)
    # Validation is the public function's, whatever the impl.
    with pytest.raises(ValueError, match=r"C must have shape \[batch, length, d_state\]"):
        selective_scan(u, delta, A, Bm, C[..., :2], impl="chunked")
    with pytest.raises(ValueError, match="delta_bias must have shape"):
        selective_scan(u, delta, A, Bm, C, delta_bias=jnp.ones(2), impl="pallas")
