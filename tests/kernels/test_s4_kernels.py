"""S4 / S4D kernels against direct powers of the discretised matrices (float64 NumPy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import hippo, ssm_kernels


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def direct_kernel(c, d_a, d_b, length, diagonal):
    """K_l = C dA^l dB, one power at a time (2 Re for conjugate-pair halves)."""
    out = np.zeros((c.shape[0], length))
    for h in range(c.shape[0]):
        power = np.ones_like(d_a[h]) if diagonal else np.eye(d_a.shape[-1])
        for step in range(length):
            if diagonal:
                out[h, step] = 2 * np.sum(c[h] * power * d_b[h]).real
                power = power * d_a[h]
            else:
                out[h, step] = (c[h] @ power @ d_b[h]).real
                power = power @ d_a[h]
    return out


def complex_normal(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def test_nplr_reconstructs_hippo_legs():
    a, _ = hippo.legs(8)
    lam, p, b, v = hippo.nplr_legs(8)
    np.testing.assert_allclose(v @ v.conj().T, np.eye(8), atol=1e-12)  # unitary
    rebuilt = v @ (np.diag(lam) - np.outer(p, p.conj())) @ v.conj().T
    np.testing.assert_allclose(rebuilt, a, atol=1e-10)
    np.testing.assert_allclose(v @ b, hippo.legs(8)[1], atol=1e-10)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)


@pytest.mark.parametrize("length", [16, 33])
@pytest.mark.parametrize("hippo_init", [True, False])
def test_dplr_kernel_equals_direct_powers(length, hippo_init):
    rng = np.random.default_rng(length)
    h, n = 2, 8
    if hippo_init:
        lam, p, b, _ = hippo.nplr_legs(n)
        lam, p, b = (np.tile(x, (h, 1)) for x in (lam, p, b))
        q = p
    else:  # random stable DPLR system, Q != P
        lam = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n)) * 3
        p, q, b = (0.3 * complex_normal(rng, (h, n)) for _ in range(3))
    c = complex_normal(rng, (h, n))
    log_dt = np.log([0.05, 0.2])
    args = [jnp.asarray(x) for x in (lam, p, q, b)]
    k = ssm_kernels.dplr_kernel(*args, jnp.asarray(c), jnp.asarray(log_dt), length)
    d_a, d_b = (np.asarray(x) for x in ssm_kernels.discretize_dplr(*args, jnp.asarray(log_dt)))
    ref = direct_kernel(c, d_a, d_b, length, diagonal=False)
    np.testing.assert_allclose(np.asarray(k), ref, atol=1e-9 * np.abs(ref).max())


def test_dplr_discretisation_equals_dense_inverse():
    """The Woodbury closed form against NumPy's dense inverse of I - dt/2 A."""
    rng = np.random.default_rng(7)
    h, n = 3, 6
    lam = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n))
    p, q, b = (0.5 * complex_normal(rng, (h, n)) for _ in range(3))
    log_dt = np.log([0.01, 0.1, 1.0])
    d_a, d_b = ssm_kernels.discretize_dplr(*(jnp.asarray(x) for x in (lam, p, q, b, log_dt)))
    for i in range(h):
        a = np.diag(lam[i]) - np.outer(p[i], q[i].conj())
        dt = np.exp(log_dt[i])
        inv = np.linalg.inv(np.eye(n) - dt / 2 * a)
        np.testing.assert_allclose(d_a[i], inv @ (np.eye(n) + dt / 2 * a), atol=1e-12)
        np.testing.assert_allclose(d_b[i], inv @ (dt * b[i]), atol=1e-12)


def test_structured_dplr_step_equals_dense_step():
    """The O(N) step against dA h + dB u with dense NumPy matrices."""
    rng = np.random.default_rng(3)
    h, n, batch = 3, 6, 2
    lam = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n))
    p, q, b = (0.5 * complex_normal(rng, (h, n)) for _ in range(3))
    log_dt = np.log([0.01, 0.1, 1.0])
    factors = ssm_kernels.dplr_bilinear_factors(*(jnp.asarray(x) for x in (lam, p, q, b, log_dt)))
    state, u = complex_normal(rng, (batch, h, n)), rng.normal(size=(batch, h))
    got = np.asarray(ssm_kernels.dplr_bilinear_step(factors, jnp.asarray(state), jnp.asarray(u)))
    for i in range(h):  # NumPy's dense bilinear matrices, independently of the kernel
        a = np.diag(lam[i]) - np.outer(p[i], q[i].conj())
        dt = np.exp(log_dt[i])
        inv = np.linalg.inv(np.eye(n) - dt / 2 * a)
        d_a, d_b = inv @ (np.eye(n) + dt / 2 * a), inv @ (dt * b[i])
        want = state[:, i] @ d_a.T + d_b * u[:, i, None]
        np.testing.assert_allclose(got[:, i], want, atol=1e-12)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["legs", "lin", "inv", "random"])
def test_s4d_kernel_equals_direct_powers(disc, init):
    rng = np.random.default_rng(1)
    h, n, length = 3, 4, 21
    if init == "random":
        a = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n))
    else:
        a = np.tile(hippo.s4d_init(init, n), (h, 1))
    b, c = complex_normal(rng, (h, n)), complex_normal(rng, (h, n))
    log_dt = np.log([0.01, 0.1, 0.5])
    k = ssm_kernels.s4d_kernel(*(jnp.asarray(x) for x in (a, b, c, log_dt)), length, disc)
    d_a, d_b = ssm_kernels.discretize_diag(
        jnp.asarray(a), jnp.asarray(b), jnp.asarray(log_dt), disc
    )
    ref = direct_kernel(c, np.asarray(d_a), np.asarray(d_b), length, diagonal=True)
    np.testing.assert_allclose(np.asarray(k), ref, atol=1e-9 * np.abs(ref).max())


def test_zoh_matches_the_matrix_exponential():
    rng = np.random.default_rng(2)
    a = -np.exp(rng.normal(size=(1, 3))) + 1j * rng.normal(size=(1, 3))
    b = complex_normal(rng, (1, 3))
    log_dt = jnp.log(jnp.asarray([0.3]))
    d_a, d_b = ssm_kernels.discretize_diag(jnp.asarray(a), jnp.asarray(b), log_dt, "zoh")
    np.testing.assert_allclose(d_a, np.exp(0.3 * a))
    np.testing.assert_allclose(d_b, (np.exp(0.3 * a) - 1) / a * b)


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


def test_bad_discretisation():
    with pytest.raises(ValueError, match="unknown discretisation"):
        ssm_kernels.discretize_diag(jnp.ones((1, 2)), jnp.ones((1, 2)), jnp.zeros(1), "euler")
