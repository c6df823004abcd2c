"""S4 and S4D layers: the protocol, their kernels against NumPy, the bidirectional form
and its padding mask, the initialisations, the optimizer rules they declare."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import params as P
from arch import protocol
from arch.mixers.s4 import S4, S4State
from arch.mixers.s4d import S4D
from kernels import hippo

# FFT convolution (parallel) vs complex recurrences (step) in float32: a few ulps of
# the output scale per position, growing slowly with length.
TOL = 2e-5

LAYERS = [
    (S4, {"max_len": 7, "n_ssm": 2}),  # an odd kernel length; shared Lambda, B, P
    (S4D, {"n_ssm": 1}),  # S4D-Lin, ZOH
    (S4D, {"init_scheme": "legs", "disc": "bilinear"}),
    (S4D, {"init_scheme": "inv"}),
]


@pytest.mark.parametrize("cls, options", LAYERS)
@pytest.mark.parametrize("length", [1, 7])
def test_parallel_equals_recurrent(cls, options, length):
    layer = cls(d_model=8, d_state=8, **options)
    x = jax.random.normal(jax.random.key(0), (2, length, 8))
    params = jax.jit(layer.init)(jax.random.key(1), x)

    @jax.jit  # one compilation is faster than running the three forms op by op
    def three_ways(params, x):
        y_rec, state = protocol.recurrent_apply(layer, params, x)
        y_pre, state_pre = protocol.prefill_then_step(layer, params, x, split=length // 2 + 1)
        return layer.apply(params, x), y_rec, state, y_pre, state_pre

    y, y_rec, state, y_pre, state_pre = three_ways(params, x)
    np.testing.assert_allclose(y_rec, y, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(y_pre, y, atol=TOL, rtol=TOL)
    # Both keep one of each conjugate pair: N/2 complex states per channel.
    assert isinstance(state, S4State) and state.h.shape == (2, 8, 4)
    assert state.h.dtype == jnp.complex64
    np.testing.assert_allclose(state_pre.h, state.h, atol=TOL, rtol=TOL)


def test_s4_recovers_C_once_when_decoding_starts():
    """init_state carries C = C~ (I - dA^L)^-1 so that no step recomputes it; a state
    built without it (a hand-made S4State(h)) recovers C and gives the same output."""
    layer = S4(d_model=8, d_state=8, max_len=16)
    x = jax.random.normal(jax.random.key(0), (2, 3, 8))
    params = jax.jit(layer.init)(jax.random.key(1), x)
    state = layer.apply(params, 2, method="init_state")
    C = layer.apply(params, method=lambda m: m.C())  # (H N/2)
    np.testing.assert_allclose(state.C, jnp.broadcast_to(C, (2, 8, 4)), rtol=1e-6)
    carried, y = layer.apply(params, state, x, method="prefill")
    _, y_recovered = layer.apply(params, S4State(state.h), x, method="prefill")
    np.testing.assert_allclose(y_recovered, y, atol=TOL, rtol=TOL)
    np.testing.assert_array_equal(carried.C, state.C)  # passed along, not recomputed
    model = arch.build("s4", vocab_size=7, d_model=8, d_state=4, max_len=16)
    assert arch.state_size(model)["per_layer"] == 8 * 2 * 2  # h only: C is not memory


@pytest.mark.parametrize("cls", [S4, S4D])
def test_bidirectional_sees_both_directions_and_has_no_step(cls):
    layer = cls(d_model=4, d_state=4, causal=False, **({"max_len": 8} if cls is S4 else {}))
    x = jax.random.normal(jax.random.key(0), (1, 6, 4))
    later = x.at[:, -1].add(1.0)
    params = jax.jit(layer.init)(jax.random.key(1), x)
    y, y_later = jax.jit(jax.vmap(layer.apply, (None, 0)))(params, jnp.stack([x, later]))
    assert not np.allclose(y_later[:, 0], y[:, 0])  # the future reaches t=0
    causal = cls(d_model=4, d_state=4, **({"max_len": 8} if cls is S4 else {}))
    p_causal = jax.jit(causal.init)(jax.random.key(1), x)
    y, y_later = jax.jit(jax.vmap(causal.apply, (None, 0)))(p_causal, jnp.stack([x, later]))
    assert np.allclose(y_later[:, 0], y[:, 0])
    with pytest.raises(protocol.NotCausalError):
        layer.apply(params, 1, method="init_state")


@pytest.mark.parametrize(
    "layer", [S4(4, d_state=4, max_len=16), S4(4, d_state=4, causal=False), S4D(4, causal=False)]
)
def test_padding_after_real_tokens_does_not_matter(layer):
    """With the mask, outputs at real positions are the same whatever padding follows
    them (its length and its content): the bidirectional kernel sees zeros there."""
    real = jax.random.normal(jax.random.key(0), (1, 5, 4))
    pads = [jax.random.normal(jax.random.key(i), (1, n, 4)) * 3 for i, n in ((1, 3), (2, 8))]
    params = jax.jit(layer.init)(jax.random.key(1), real)

    @jax.jit
    def masked_and_not(x):
        mask = jnp.arange(x.shape[1])[None] < 5
        return layer.apply(params, x, mask=mask)[:, :5], layer.apply(params, x)[:, :5]

    (short, _), (long, unmasked) = (
        masked_and_not(jnp.concatenate([real, pad], axis=1)) for pad in pads
    )
    np.testing.assert_allclose(short, long, atol=1e-5, rtol=1e-5)
    if not layer.causal:  # without the mask, the padding reaches real positions
        assert not np.allclose(unmasked, long, atol=1e-3)


def test_gradients_are_finite():
    layer = S4(d_model=4, d_state=4, max_len=16)
    x = jax.random.normal(jax.random.key(0), (2, 9, 4))
    params = jax.jit(layer.init)(jax.random.key(1), x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2)))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize(
    "name, ssm",
    [
        ("s4", ("log_dt", "Lambda_log_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im")),
        ("s4d", ("log_dt", "A_log_re", "A_im", "B_re", "B_im")),
    ],
)
def test_ssm_params_get_the_ssm_rule(name, ssm):
    model = arch.build(name, vocab_size=11, d_model=8, n_layers=1, d_state=4)
    rules = P.param_rules(model, jnp.zeros((1, 3), jnp.int32))
    mixer = rules["backbone"]["blocks_0"]["mixer"]
    assert {leaf for leaf, rule in mixer.items() if rule == P.SSM} == set(ssm)
    # C and D at the model's learning rate (state-spaces/s4); Dense biases not decayed.
    assert mixer["C_re"] == mixer["C_im"] == mixer["D"] == P.DEFAULT
    assert mixer["output_linear"]["bias"] == P.NO_DECAY


@pytest.mark.parametrize("cls", [S4, S4D])
def test_dt_and_c_learning_rate_options(cls):
    """The LRA configs' per-task choices: ``lr: {dt: null}`` (dt at the global lr, not
    decayed) and a scalar ``lr: 0.001`` (C at the SSM lr, decayed like the model)."""
    default = cls(4, d_state=4).param_rules()
    assert default["log_dt"] == P.SSM and default["C_re"] == default["C_im"] == P.DEFAULT
    rules = cls(4, d_state=4, dt_lr="global", c_lr="ssm").param_rules()
    assert rules["log_dt"] == P.ParamRule(base="lr", wd_mult=0.0)
    c_rule = P.ParamRule(base="ssm_lr", wd_base="lr")
    assert rules["C_re"] == rules["C_im"] == c_rule
    assert rules["B_re"] == rules["B_im"] == P.SSM
    # Through the registry and arch.params, as the optimizer sees them.
    model = arch.build(
        cls.__name__.lower(),
        vocab_size=5,
        d_model=4,
        n_layers=1,
        d_state=4,
        max_len=8,
        dt_lr="global",
        c_lr="ssm",
    )
    mixer = P.param_rules(model, jnp.zeros((1, 3), jnp.int32))["backbone"]["blocks_0"]["mixer"]
    assert mixer["log_dt"] == P.NO_DECAY and mixer["C_re"] == c_rule


@pytest.mark.parametrize("cls", [S4, S4D])
def test_n_ssm_shares_a_b_p_across_channels(cls):
    """n_ssm copies of (A, B, P), each shared by d_model / n_ssm channels; dt, C per channel."""
    shared = ("Lambda_log_re", "Lambda_im", "P_re", "P_im") if cls is S4 else ("A_log_re", "A_im")
    for n_ssm, rows in ((1, 1), (2, 2), (None, 4)):
        layer = cls(d_model=4, d_state=6, n_ssm=n_ssm, causal=False)
        shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 3, 4)))["params"]
        for name in (*shared, "B_re", "B_im"):
            assert shapes[name].shape == (rows, 3), name
        assert shapes["log_dt"].shape == (4,)
        assert shapes["C_re"].shape == shapes["C_im"].shape == (2, 4, 3)
    for bad in (3, 0, 8, 1.0):
        with pytest.raises(ValueError, match="n_ssm"):
            cls(d_model=4, n_ssm=bad)


def test_s4d_initialisations():
    """S4D-Lin by default (state-spaces/s4 s4d.yaml ``init: diag-lin``) with B = 1;
    S4D-LegS takes A and the clipped B of the NPLR form."""
    assert S4D(2).init_scheme == "lin"

    def init(layer):  # setup's parameters only, without a forward pass
        return layer.init(jax.random.key(0), method="discretise")["params"]

    for scheme in ("lin", "inv"):
        p = init(S4D(2, d_state=8, init_scheme=scheme))
        np.testing.assert_array_equal(p["B_re"], 1.0)
        np.testing.assert_array_equal(p["B_im"], 0.0)
    lam, _, b, _ = hippo.nplr_legs(64)
    p = init(S4D(2, d_state=64, init_scheme="legs"))
    np.testing.assert_allclose(p["B_re"], np.tile(b.real, (2, 1)), rtol=1e-6)
    np.testing.assert_allclose(p["B_im"], np.tile(b.imag, (2, 1)), rtol=1e-6)
    np.testing.assert_allclose(p["A_im"], np.tile(lam.imag, (2, 1)), rtol=1e-6)
    assert np.abs(p["B_im"]).max() <= 2.0


def test_s4_init_is_nplr_with_clipped_b():
    lam, p_nplr, b, _ = hippo.nplr_legs(16)
    p = S4(2, d_state=16, max_len=8).init(jax.random.key(0), method="continuous")["params"]
    for name, want in (
        ("Lambda_im", lam.imag),
        ("P_re", p_nplr.real),
        ("P_im", p_nplr.imag),
        ("B_re", b.real),
        ("B_im", b.imag),
    ):
        np.testing.assert_allclose(p[name], np.tile(want, (2, 1)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer", [S4(4, d_state=4), S4D(4, d_state=4, causal=False)])
def test_declared_rules_name_own_parameters(layer):
    shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 3, 4)))["params"]
    own = {name for name, leaf in shapes.items() if not isinstance(leaf, dict)}
    assert P.declared_rules(layer) and set(P.declared_rules(layer)) <= own


def test_bad_options():
    with pytest.raises(ValueError, match="d_state must be even"):
        S4D(d_model=4, d_state=3)
    with pytest.raises(ValueError, match="d_state must be even"):
        S4(d_model=4, d_state=5)
    with pytest.raises(ValueError, match="init_scheme"):
        S4D(d_model=4, init_scheme="foo")
    with pytest.raises(ValueError, match="unknown disc"):
        S4D(d_model=4, disc="euler")
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        S4(d_model=4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="unknown activation"):
        S4(d_model=4, activation="relu6")
    with pytest.raises(ValueError, match="dt_lr"):
        S4D(d_model=4, dt_lr="fast")
    with pytest.raises(ValueError, match="c_lr"):
        S4(d_model=4, c_lr="none")
    with pytest.raises(ValueError, match="max_len"):
        S4(d_model=4, max_len=0)
    layer = S4(d_model=2, d_state=2, max_len=4)
    with pytest.raises(ValueError, match="max_len=4"):
        layer.init(jax.random.key(0), jnp.zeros((1, 5, 2)))


# ------------------------------------------- the layers' kernels vs NumPy (float64)


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


def complex_normal(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def with_params(layer, length, **values):
    """``values`` (NumPy, float64) for ``layer``'s SSM parameters, zeros for the rest."""
    x = jnp.zeros((1, length, layer.d_model))
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    return {"params": {**params, **{k: jnp.asarray(v) for k, v in values.items()}}}


def layer_kernel(layer, params, length):
    """The SSM kernel K [H, L] that ``__call__`` builds (it sows it)."""
    x = jnp.zeros((1, length, layer.d_model))
    _, state = jax.jit(lambda p: layer.apply(p, x, mutable="intermediates"))(params)
    (kernel,) = state["intermediates"]["kernel"]
    return np.asarray(kernel[0])


def direct_kernel(c, d_a, d_b, length):
    """K_l = C dA^l dB, one power at a time, per channel (``d_a`` [H, N, N])."""
    out = np.zeros((c.shape[0], length))
    for h in range(c.shape[0]):
        power = np.eye(d_a.shape[-1])
        for step in range(length):
            out[h, step] = (c[h] @ power @ d_b[h]).real
            power = power @ d_a[h]
    return out


def both_halves(x):
    return np.concatenate([x, x.conj()], axis=-1)


@pytest.mark.parametrize("length, max_len", [(16, 16), (13, 40), (33, 33)])
@pytest.mark.parametrize("hippo_init", [True, False])
def test_s4_kernel_equals_direct_powers(float64, length, max_len, hippo_init):
    """Algorithm 1 with the trained C~ (conjugate-symmetric Cauchy kernels + Woodbury +
    iFFT at length max_len, cut to the input's length) against K_l = C dA^l dB with
    NumPy's dense bilinear discretisation of the full system A = diag(Lambda_f) -
    P_f P_f^* over both conjugate halves, and C = C~ (I - dA^L)^-1 by NumPy's solve.
    Also the layer's own C recovery (the doubling product) against that solve."""
    rng = np.random.default_rng(length)
    h, n = 2, 4  # n = N/2 stored pairs
    if hippo_init:
        lam, p, b, _ = hippo.nplr_legs(2 * n)
        lam, p, b = (np.tile(x, (h, 1)) for x in (lam, p, b))
    else:  # a random stable DPLR system
        lam = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n)) * 3
        p, b = (0.3 * complex_normal(rng, (h, n)) for _ in range(2))
    c_tilde = complex_normal(rng, (h, n))
    log_dt = np.log([0.05, 0.2])
    layer = S4(d_model=h, d_state=2 * n, max_len=max_len)
    params = with_params(
        layer,
        length,
        log_dt=log_dt,
        Lambda_log_re=np.log(-lam.real),
        Lambda_im=lam.imag,
        P_re=p.real,
        P_im=p.imag,
        B_re=b.real,
        B_im=b.imag,
        C_re=c_tilde.real[None],  # one direction
        C_im=c_tilde.imag[None],
    )
    full = 2 * n
    d_a, d_b = np.zeros((h, full, full), complex), np.zeros((h, full), complex)
    c = np.zeros((h, full), complex)
    for i in range(h):
        a = np.diag(both_halves(lam[i])) - np.outer(both_halves(p[i]), both_halves(p[i]).conj())
        inv = np.linalg.inv(np.eye(full) - np.exp(log_dt[i]) / 2 * a)
        d_a[i] = inv @ (np.eye(full) + np.exp(log_dt[i]) / 2 * a)
        d_b[i] = inv @ (np.exp(log_dt[i]) * both_halves(b[i]))
        d_a_l = np.linalg.matrix_power(d_a[i], max_len)
        c[i] = np.linalg.solve((np.eye(full) - d_a_l).T, both_halves(c_tilde[i]))
    ref = direct_kernel(c, d_a, d_b, length)  # real: the halves are conjugate
    k = layer_kernel(layer, params, length)
    np.testing.assert_allclose(k, ref, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(layer.apply(params, method="C"), c[:, :n], rtol=1e-9)


def s4d_params(layer, length, a, b, c, log_dt):
    return with_params(
        layer,
        length,
        log_dt=log_dt,
        A_log_re=np.log(-a.real),
        A_im=a.imag,
        B_re=b.real,
        B_im=b.imag,
        C_re=c.real[None],
        C_im=c.imag[None],
    )


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["legs", "lin", "inv", "random"])
def test_s4d_kernel_equals_direct_powers(float64, disc, init):
    """The Vandermonde kernel against 2 Re(C dA^l dB) over the N/2 stored halves."""
    rng = np.random.default_rng(1)
    h, n, length = 3, 4, 21
    if init == "random":
        a = -np.exp(rng.normal(size=(h, n))) + 1j * rng.normal(size=(h, n))
    else:
        a = np.tile(hippo.s4d_init(init, n)[0], (h, 1))
    b, c = complex_normal(rng, (h, n)), complex_normal(rng, (h, n))
    dt = np.array([0.01, 0.1, 0.5])[:, None]
    if disc == "zoh":
        d_a, d_b = np.exp(dt * a), (np.exp(dt * a) - 1) / a * b
    else:
        d_a, d_b = (1 + dt * a / 2) / (1 - dt * a / 2), dt * b / (1 - dt * a / 2)
    ref = 2 * direct_kernel(c, np.eye(n) * d_a[:, None, :], d_b, length)  # diagonal dA
    layer = S4D(d_model=h, d_state=2 * n, disc=disc)
    params = s4d_params(layer, length, a, b, c, np.log(dt[:, 0]))
    np.testing.assert_allclose(
        layer_kernel(layer, params, length), ref, atol=1e-9 * np.abs(ref).max()
    )


def test_s4d_zoh_matches_the_matrix_exponential(float64):
    rng = np.random.default_rng(2)
    a = -np.exp(rng.normal(size=(1, 3))) + 1j * rng.normal(size=(1, 3))
    b, c = complex_normal(rng, (1, 3)), complex_normal(rng, (1, 3))
    layer = S4D(d_model=1, d_state=6)
    params = s4d_params(layer, 4, a, b, c, np.log([0.3]))
    d_a, d_b = layer.apply(params, method="discretise")
    np.testing.assert_allclose(d_a, np.exp(0.3 * a))
    np.testing.assert_allclose(d_b, (np.exp(0.3 * a) - 1) / a * b)
