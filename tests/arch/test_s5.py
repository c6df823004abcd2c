"""S5: the layer against a float64 NumPy re-derivation of the paper's equations, every
scan implementation against the lax.scan reference, the HiPPO-N initialisation and the
official trainer's parameter groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import params as P
from arch.mixers.s5 import S5, hippo_n_blocks
from kernels import hippo
from kernels.s5 import discretise, s5_scan

H, STATE, LENGTH = 6, 8, 11


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_s5(p, u, causal=True, bilinear=False):
    """Eqs. 4-6 of the S5 paper, one step at a time, float64, conjugate-symmetric."""
    lam = p["Lambda_re"].astype(np.float64) + 1j * p["Lambda_im"]
    b = p["B"][..., 0] + 1j * p["B"][..., 1]
    step = np.exp(p["log_step"].astype(np.float64))
    if bilinear:
        lam_bar = (1 + step / 2 * lam) / (1 - step / 2 * lam)
        b_bar = (step / (1 - step / 2 * lam))[:, None] * b
    else:
        lam_bar = np.exp(lam * step)
        b_bar = ((lam_bar - 1) / lam)[:, None] * b

    def run(c, order):
        c = c[..., 0] + 1j * c[..., 1]
        y, x = np.zeros(u.shape), np.zeros((u.shape[0], lam.shape[0]), complex)
        for k in order:
            x = lam_bar * x + u[:, k] @ b_bar.T
            y[:, k] = 2 * (x @ c.T).real
        return y

    y = run(p["C"], range(u.shape[1])) + p["D"] * u
    if not causal:
        y = y + run(p["C2"], reversed(range(u.shape[1])))
    return gelu_tanh(y)


def random_params(module, u, seed=0):
    variables = jax.jit(module.init)(jax.random.key(seed), u)
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(
        tree,
        [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)],
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_layer_is_the_papers_equations(causal, disc):
    module = S5(H, d_state=STATE, blocks=2, activation="gelu", causal=causal, discretization=disc)
    u = np.random.default_rng(0).normal(size=(2, LENGTH, H)).astype(np.float32)
    variables = random_params(module, jnp.asarray(u))
    ours = module.apply(variables, jnp.asarray(u))
    p = jax.tree.map(np.asarray, variables["params"])
    expected = numpy_s5(p, u.astype(np.float64), causal=causal, bilinear=disc == "bilinear")
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "impl, length, reverse",
    [("associative", 33, False), ("chunked", 33, True)],
)  # 33: chunks of 8 and a partial one; complex inputs, forwards and reversed
def test_scan_impls_match_the_reference(impl, length, reverse):
    r = np.random.default_rng(1)
    lam_bar = jnp.asarray(0.95 * np.exp(1j * r.normal(size=4)), jnp.complex64)
    bu = jnp.asarray(r.normal(size=(2, length, 4)) + 1j * r.normal(size=(2, length, 4)))
    h0 = jnp.asarray(r.normal(size=(2, 4)) + 0j, jnp.complex64)
    options = {"chunk_size": 8} if impl == "chunked" else {}

    def run(impl, **options):
        def loss(bu):
            hs, h = s5_scan(lam_bar, bu, h0, reverse=reverse, impl=impl, **options)
            return (jnp.abs(hs) ** 2).sum() + (jnp.abs(h) ** 2).sum(), (hs, h)

        return jax.value_and_grad(loss, has_aux=True)(bu.astype(jnp.complex64))

    (_, (hs, h)), g = run("sequential")
    (_, (hs2, h2)), g2 = run(impl, **options)
    for a, b in ((hs2, hs), (h2, h), (g2, g)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_hippo_n_blocks_diagonalise_the_normal_part_of_legs():
    """Each block: 2 Re(V diag(Lambda) V^*) = A + p p^T, the normal part of HiPPO-LegS
    (S5 section 4.3), Re(Lambda) = -1/2."""
    lam, v = hippo_n_blocks(16, 2)
    a, _ = hippo.legs(8)
    p = np.sqrt(np.arange(8) + 0.5)
    block = v[:8, :4]
    np.testing.assert_allclose(
        2 * (block @ np.diag(lam[:4]) @ block.conj().T).real, a + np.outer(p, p), atol=1e-9
    )
    np.testing.assert_allclose(lam.real, -0.5)
    np.testing.assert_allclose(v[8:, 4:], block)  # the same block repeated
    assert np.abs(v[:8, 4:]).max() == 0  # block-diagonal


def test_init_is_s5s():
    module = S5(H, d_state=STATE, blocks=2)
    p = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 3, H)))["params"]
    step = np.exp(np.asarray(p["log_step"]))
    assert 1e-3 <= step.min() and step.max() <= 0.1  # Delta log-uniform in [dt_min, dt_max]
    lam, v = hippo_n_blocks(STATE, 2)
    np.testing.assert_allclose(p["Lambda_im"], lam.imag, atol=1e-6)
    # B_tilde = V^-1 B of a real B: the real B = 2 Re(V B_tilde) maps back to B_tilde.
    b = np.asarray(p["B"][..., 0] + 1j * p["B"][..., 1])
    np.testing.assert_allclose(v.conj().T @ (2 * (v @ b).real), b, atol=1e-5)


@pytest.mark.parametrize(
    "b_lr, dt_lr, b_rule, dt_rule",
    [
        ("ssm", "ssm", P.SSM, P.SSM),  # opt_config "standard"
        ("ssm_decay", "ssm", P.SSM._replace(wd_base="lr"), P.SSM),  # "BandCdecay"
        ("global", "global", P.DEFAULT, P.DEFAULT),  # "BfastandCdecay", dt_global
    ],
)
def test_parameter_groups_are_the_official_trainers(b_lr, dt_lr, b_rule, dt_rule):
    module = S5(H, d_state=STATE, b_lr=b_lr, dt_lr=dt_lr)
    rules = P.param_rules(module, jnp.zeros((1, 3, H)))
    assert rules["B"] == b_rule and rules["log_step"] == dt_rule
    assert rules["Lambda_re"] == rules["Lambda_im"] == P.SSM
    assert rules["C"] == rules["D"] == P.DEFAULT


def test_discretise_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown discretisation 'euler'"):
        discretise(jnp.ones(2), jnp.ones((2, 3)), jnp.ones(2), "euler")
