"""The numerical pieces of S4 / S4D against float64 NumPy (the layers' kernels as a
whole are checked against direct matrix powers in tests/arch/test_s4.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import hippo, ssm_kernels


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def complex_normal(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def random_dplr(rng, h, n):
    """A random stable DPLR system (Lambda, P, Q, B) with Q != P."""
    lam = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n))
    p, q, b = (0.5 * complex_normal(rng, (h, n)) for _ in range(3))
    return lam, p, q, b


def dense_bilinear(lam, p, q, b, dt):
    """NumPy's dA, dB for one channel, by a dense inverse of I - dt/2 A."""
    a = np.diag(lam) - np.outer(p, q.conj())
    inv = np.linalg.inv(np.eye(len(lam)) - dt / 2 * a)
    return inv @ (np.eye(len(lam)) + dt / 2 * a), inv @ (dt * b)


def test_nplr_reconstructs_hippo_legs():
    """N/2 kept eigenvalues (negative imaginary part, as state-spaces/s4) and the
    conjugate half implied: [V, conj V] diagonalises A + p p^T unitarily."""
    a, b_full = hippo.legs(8)
    lam, p, b, v = hippo.nplr_legs(8, b_clip=None)
    assert lam.shape == p.shape == b.shape == (4,) and v.shape == (8, 4)
    assert (lam.imag < 0).all() and (np.diff(lam.imag) > 0).all()
    v_full = np.concatenate([v, v.conj()], axis=1)
    np.testing.assert_allclose(v_full @ v_full.conj().T, np.eye(8), atol=1e-12)  # unitary
    both = lambda x: np.concatenate([x, x.conj()])  # noqa: E731
    rebuilt = v_full @ (np.diag(both(lam)) - np.outer(both(p), both(p).conj())) @ v_full.conj().T
    np.testing.assert_allclose(rebuilt, a, atol=1e-10)
    np.testing.assert_allclose(2 * (v @ b).real, b_full, atol=1e-10)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)


def test_nplr_clips_only_the_imaginary_part_of_b():
    """B_clip=2 (state-spaces/s4 hippo.py:274-275): Im(B) clamped to [-2, 2], Re(B) kept."""
    lam, p, b, _ = hippo.nplr_legs(64)
    lam0, p0, b0, _ = hippo.nplr_legs(64, b_clip=None)
    assert np.abs(b0.imag).max() > 2  # the clip is active at this size
    assert np.abs(b.imag).max() <= 2.0
    small = np.abs(b0.imag) <= 2
    np.testing.assert_array_equal(b.imag[small], b0.imag[small])
    np.testing.assert_array_equal(b.imag[~small], 2.0 * np.sign(b0.imag[~small]))
    np.testing.assert_array_equal(b.real, b0.real)
    np.testing.assert_array_equal(lam, lam0)
    np.testing.assert_array_equal(p, p0)


def test_bilinear_dplr_equals_dense_inverse():
    """The Woodbury closed form (dense dA, and dB) against NumPy's dense inverse."""
    rng = np.random.default_rng(7)
    h, n = 3, 6
    system = random_dplr(rng, h, n)
    log_dt = np.log([0.01, 0.1, 1.0])
    disc = ssm_kernels.bilinear_dplr(*(jnp.asarray(x) for x in (*system, log_dt)))
    d_a = np.asarray(disc.dense_dA())
    for i in range(h):
        want_a, want_b = dense_bilinear(*(x[i] for x in system), np.exp(log_dt[i]))
        np.testing.assert_allclose(d_a[i], want_a, atol=1e-12)
        np.testing.assert_allclose(disc.dB[i], want_b, atol=1e-12)


def test_conj_pairs_dplr_is_the_stored_half_of_the_full_system():
    """``conj_pairs=True`` on the stored half equals the full system's [x, conj x]
    computation, for dA h, dB and the dense dA."""
    rng = np.random.default_rng(11)
    h, n, batch = 2, 3, 2
    system = random_dplr(rng, h, n)
    log_dt = np.log([0.1, 0.7])
    both = lambda x: np.concatenate([x, x.conj()], axis=-1)  # noqa: E731
    half = ssm_kernels.bilinear_dplr(*(jnp.asarray(x) for x in (*system, log_dt)), conj_pairs=True)
    full = ssm_kernels.bilinear_dplr(*(jnp.asarray(both(x)) for x in system), jnp.asarray(log_dt))
    state = complex_normal(rng, (batch, h, n))
    np.testing.assert_allclose(half.dB, full.dB[:, :n], atol=1e-12)
    np.testing.assert_allclose(
        half.dA(jnp.asarray(state)), full.dA(jnp.asarray(both(state)))[..., :n], atol=1e-12
    )
    np.testing.assert_allclose(half.dense_dA(), full.dense_dA(), atol=1e-12)


def test_times_inverse_one_minus_equals_solve():
    """The doubling product against NumPy's solve, and its documented truncation."""
    rng = np.random.default_rng(4)
    m = complex_normal(rng, (2, 5, 5))
    m *= 0.9 / np.abs(np.linalg.eigvals(m)).max(-1)[:, None, None]  # rho(M) = 0.9
    v = complex_normal(rng, (3, 2, 5))
    want = np.stack([np.linalg.solve((np.eye(5) - m[i]).T, v[:, i].T).T for i in range(2)], 1)
    got = ssm_kernels.times_inverse_one_minus(jnp.asarray(v), jnp.asarray(m), squarings=10)
    np.testing.assert_allclose(got, want, atol=1e-9 * np.abs(want).max())
    # Two squarings: exactly v (I - M)^-1 (I - M^8).
    got = ssm_kernels.times_inverse_one_minus(jnp.asarray(v), jnp.asarray(m), squarings=2)
    m8 = np.linalg.matrix_power(m, 8)
    np.testing.assert_allclose(
        got, want - np.einsum("khn,hnm->khm", want, m8), atol=1e-9 * np.abs(want).max()
    )


def test_structured_dplr_step_equals_dense_step():
    """dA(h) + dB u in O(N) against dA h + dB u with dense NumPy matrices."""
    rng = np.random.default_rng(3)
    h, n, batch = 3, 6, 2
    system = random_dplr(rng, h, n)
    log_dt = np.log([0.01, 0.1, 1.0])
    disc = ssm_kernels.bilinear_dplr(*(jnp.asarray(x) for x in (*system, log_dt)))
    state, u = complex_normal(rng, (batch, h, n)), rng.normal(size=(batch, h))
    got = np.asarray(disc.dA(jnp.asarray(state)) + disc.dB * jnp.asarray(u)[..., None])
    for i in range(h):  # independently of the kernel
        d_a, d_b = dense_bilinear(*(x[i] for x in system), np.exp(log_dt[i]))
        want = state[:, i] @ d_a.T + d_b * u[:, i, None]
        np.testing.assert_allclose(got[:, i], want, atol=1e-12)


def test_cauchy_and_vandermonde_equal_direct_sums():
    rng = np.random.default_rng(5)
    h, n, length = 2, 5, 7
    v = complex_normal(rng, (3, h, n))  # a leading batch axis, as S4's two directions
    z = complex_normal(rng, (h, length))
    lam, x = complex_normal(rng, (h, n)), complex_normal(rng, (h, n))
    got_c = np.asarray(ssm_kernels.cauchy(jnp.asarray(v), jnp.asarray(z), jnp.asarray(lam)))
    got_v = np.asarray(ssm_kernels.vandermonde(jnp.asarray(v), jnp.asarray(x), length))
    want_c = np.einsum("khn,hnl->khl", v, 1 / (z[:, None, :] - lam[:, :, None]))
    want_v = np.einsum("khn,hnl->khl", v, x[..., None] ** np.arange(length))
    np.testing.assert_allclose(got_c, want_c, atol=1e-12)
    np.testing.assert_allclose(got_v, want_v, atol=1e-12)
    # Conjugate pairs: the sum over [lam, conj lam] with [v, conj v].
    got_s = ssm_kernels.cauchy(jnp.asarray(v), jnp.asarray(z), jnp.asarray(lam), conj_pairs=True)
    v_f, lam_f = (np.concatenate([a, a.conj()], axis=-1) for a in (v, lam))
    want_s = np.einsum("khn,hnl->khl", v_f, 1 / (z[:, None, :] - lam_f[:, :, None]))
    np.testing.assert_allclose(np.asarray(got_s), want_s, atol=1e-12)


def _direct_cauchy(v, z, lam):
    return jnp.einsum("...hn,hnl->...hl", v, 1 / (z[:, None, :] - lam[:, :, None]))


def test_cauchy_gradient_equals_the_direct_sums_and_keeps_no_per_state_terms():
    """The rematerialised scan's gradients (v, z and lambda) equal autodiff of the
    broadcast sum, and its compiled backward holds a few [H, L] buffers, not N of them."""
    rng = np.random.default_rng(6)
    h, n, length = 2, 5, 7
    v, z = complex_normal(rng, (3, h, n)), complex_normal(rng, (h, length))
    lam, w = complex_normal(rng, (h, n)), complex_normal(rng, (3, h, length))

    def loss(fn):
        return lambda v, z, lam: jnp.sum(jnp.real(fn(v, z, lam) * w))

    args = tuple(jnp.asarray(a) for a in (v, z, lam))
    got = jax.grad(loss(ssm_kernels.cauchy), argnums=(0, 1, 2))(*args)
    want = jax.grad(loss(_direct_cauchy), argnums=(0, 1, 2))(*args)
    for g, wt in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(wt), rtol=1e-10, atol=1e-12)
    # Memory at S4-like sizes: the direct sum's gradient keeps [N, H, L] terms alive.
    h, n, length = 16, 32, 2048
    shapes = (
        jax.ShapeDtypeStruct((h, n), jnp.complex64),
        jax.ShapeDtypeStruct((h, length), jnp.complex64),
        jax.ShapeDtypeStruct((h, n), jnp.complex64),
    )

    def temp(fn):
        grad = jax.grad(lambda *a: jnp.sum(jnp.abs(fn(*a))), argnums=(0, 1, 2))
        return jax.jit(grad).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    hl_bytes = h * length * 8
    assert temp(ssm_kernels.cauchy) < 16 * hl_bytes < temp(_direct_cauchy)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_equals_direct_convolution(bidirectional):
    rng = np.random.default_rng(3)
    u = rng.normal(size=(2, 13, 3))
    k, k_b, d = rng.normal(size=(3, 13)), rng.normal(size=(3, 13)), rng.normal(size=3)
    y = ssm_kernels.fft_conv(
        jnp.asarray(u), jnp.asarray(k), jnp.asarray(d), jnp.asarray(k_b) if bidirectional else None
    )
    ref = u * d
    for t in range(13):
        for s in range(t + 1):
            ref[:, t] += k[:, s] * u[:, t - s]
            if bidirectional:  # anti-causal half: y_t += sum_s k_b[s] u[t + s]
                ref[:, 12 - t] += k_b[:, s] * u[:, 12 - t + s]
    np.testing.assert_allclose(np.asarray(y), ref, atol=1e-10)


def test_log_dt_init_is_log_uniform_in_range():
    log_dt = ssm_kernels.log_dt_init(0.001, 0.1)(jax.random.key(0), (1000,))
    assert log_dt.dtype == jnp.float32
    assert (
        np.log(0.001) <= log_dt.min() < np.log(0.002) < np.log(0.05) < log_dt.max() <= np.log(0.1)
    )
