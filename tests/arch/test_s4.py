"""S4 and S4D layers: the protocol, the bidirectional form, parameter groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import protocol
from arch.mixers.s4 import S4, S4D

# FFT convolution (parallel) vs complex recurrences (step) in float32: a few ulps of
# the output scale per position, growing slowly with length.
TOL = 2e-5

LAYERS = [
    (S4, {}),
    (S4D, {}),
    (S4D, {"init_scheme": "lin", "disc": "bilinear"}),
    (S4D, {"init_scheme": "inv"}),
]


@pytest.mark.parametrize("cls, options", LAYERS)
@pytest.mark.parametrize("length", [1, 7])
def test_parallel_equals_recurrent(cls, options, length):
    layer = cls(d_model=8, d_state=8, **options)
    x = jax.random.normal(jax.random.key(0), (2, length, 8))
    params = layer.init(jax.random.key(1), x)
    y = layer.apply(params, x)
    y_rec, _ = protocol.recurrent_apply(layer, params, x)
    np.testing.assert_allclose(y_rec, y, atol=TOL, rtol=TOL)
    y_pre, _ = protocol.prefill_then_step(layer, params, x, split=length // 2 + 1)
    np.testing.assert_allclose(y_pre, y, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_bidirectional_sees_both_directions_and_has_no_step(cls):
    layer = cls(d_model=4, d_state=4, causal=False)
    x = jax.random.normal(jax.random.key(0), (1, 6, 4))
    params = layer.init(jax.random.key(1), x)
    y = layer.apply(params, x)
    later = x.at[:, -1].add(1.0)
    assert not np.allclose(layer.apply(params, later)[:, 0], y[:, 0])  # future reaches t=0
    causal = cls(d_model=4, d_state=4)
    p_causal = causal.init(jax.random.key(1), x)
    assert np.allclose(causal.apply(p_causal, later)[:, 0], causal.apply(p_causal, x)[:, 0])
    with pytest.raises(protocol.NotCausalError):
        layer.apply(params, 1, method="init_state")


def test_gradients_are_finite():
    layer = S4(d_model=4, d_state=4)
    x = jax.random.normal(jax.random.key(0), (2, 9, 4))
    params = layer.init(jax.random.key(1), x)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize(
    "name, ssm",
    [
        ("s4", ("log_dt", "Lambda_log_re", "P_re", "B_im")),
        ("s4d", ("log_dt", "A_log_re", "A_im", "B_re")),
    ],
)
def test_ssm_params_are_labelled(name, ssm):
    model = arch.build(name, vocab_size=11, d_model=8, n_layers=1, d_state=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))
    labels = arch.param_labels(params)["params"]["backbone"]["blocks_0"]["mixer"]
    assert all(labels[leaf] == "ssm" for leaf in ssm)
    assert labels["C_re"] == "default"  # C at the model's learning rate (state-spaces/s4)


def test_bad_options():
    with pytest.raises(ValueError, match="d_state must be even"):
        S4D(d_model=4, d_state=3)
    with pytest.raises(ValueError, match="init_scheme"):
        S4D(d_model=4, init_scheme="foo")
