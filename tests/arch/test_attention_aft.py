"""Attention and AFT mixers: parallel == recurrent == prefill-then-step, their typed
states, declared optimizer rules and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import params as P
from arch import protocol
from arch.mixers.aft import (
    AFTCache,
    AFTConv,
    AFTFull,
    AFTLocal,
    AFTSimple,
    AFTSimpleState,
    AFTWindow,
)
from arch.mixers.attention import Attention, KVCache

D, MAX_LEN = 16, 16

MIXERS = {
    "attention": lambda **kw: Attention(D, n_heads=4, max_len=MAX_LEN, **kw),
    "attention_nopos": lambda **kw: Attention(D, n_heads=2, pos="none", max_len=MAX_LEN, **kw),
    "aft_full": lambda **kw: AFTFull(D, max_len=MAX_LEN, **kw),
    "aft_local": lambda **kw: AFTLocal(D, window=3, max_len=MAX_LEN, **kw),
    "aft_simple": lambda **kw: AFTSimple(D, **kw),
    "aft_conv": lambda **kw: AFTConv(D, n_heads=4, kernel_size=3, **kw),
}


def random_params(module, x, seed=0):
    """Random values for every parameter (shapes from ``eval_shape``, so nothing is
    compiled): zero-initialised position biases (and AFT-conv's gain/shift) would
    otherwise make the variants indistinguishable."""
    shapes = jax.eval_shape(module.init, jax.random.key(seed), x)
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
        0.5 * jax.random.normal(kk, a.shape, a.dtype) for kk, a in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


# Every mixer at every length; the Attention variant without positions at one length.
GRID = [(n, length) for n in sorted(MIXERS) if n != "attention_nopos" for length in (1, 2, 7, 16)]


@pytest.mark.parametrize("name,length", [*GRID, ("attention_nopos", 7)])
def test_parallel_equals_recurrent_and_prefill_then_step(name, length):
    module = MIXERS[name]()
    x = jax.random.normal(jax.random.key(length), (2, length, D))
    params = random_params(module, x)

    @jax.jit
    def three_ways(params, x):
        y_rec, _ = protocol.recurrent_apply(module, params, x)
        y_pre, _ = protocol.prefill_then_step(module, params, x, split=(length + 1) // 2)
        return module.apply(params, x), y_rec, y_pre

    y, y_rec, y_pre = three_ways(params, x)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    np.testing.assert_allclose(y_rec, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_pre, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["aft_full", "aft_local", "aft_conv"])
def test_position_bias_matters(name):
    # The test above would pass trivially if the bias were ignored; check it is not.
    module = MIXERS[name]()
    x = jax.random.normal(jax.random.key(0), (1, 7, D))
    params = random_params(module, x)
    leaf = {"aft_full": "pos_bias", "aft_local": "pos_bias", "aft_conv": "aft_conv_shift"}[name]
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if path[-1].key == leaf else a, params
    )
    apply = jax.jit(module.apply)
    assert not np.allclose(apply(zeroed, x), apply(params, x))


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_bidirectional_has_no_recurrent_form(name):
    module = MIXERS[name](causal=False)
    x = jax.random.normal(jax.random.key(0), (1, 4, D))
    params = random_params(module, x)
    apply = jax.jit(module.apply)
    y = apply(params, x)
    # the first output depends on the last input
    assert not np.allclose(apply(params, x.at[:, -1].add(1.0))[:, 0], y[:, 0])
    with pytest.raises(protocol.NotCausalError, match="causal=True"):
        module.apply(params, 1, method="init_state")
    with pytest.raises(ValueError, match="bidirectional"):
        module.apply(params, {}, x[:, 0], method="step")
    with pytest.raises(ValueError, match="bidirectional"):
        module.apply(params, {}, x, method="prefill")


@pytest.mark.parametrize(
    "make",
    [lambda: Attention(30, n_heads=4), lambda: AFTConv(30, n_heads=4)],
    ids=["attention", "aft_conv"],
)
def test_d_model_not_divisible_by_n_heads(make):
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        make()


@pytest.mark.parametrize("name", ["attention", "aft_full", "aft_local"])
def test_length_beyond_max_len_raises(name):
    module = MIXERS[name]()
    x = jax.random.normal(jax.random.key(0), (1, MAX_LEN, D))
    params = random_params(module, x)
    too_long = jnp.zeros((1, MAX_LEN + 1, D))
    with pytest.raises(ValueError, match=f"max_len={MAX_LEN}"):
        module.apply(params, too_long)
    state = module.apply(params, 1, method="init_state")
    with pytest.raises(ValueError, match=f"max_len={MAX_LEN}"):
        module.apply(params, state, too_long, method="prefill")


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown pos"):
        Attention(D, pos="alibi")
    with pytest.raises(ValueError, match="unknown attention impl"):
        Attention(D, impl="flash9")
    with pytest.raises(ValueError, match="window"):
        AFTLocal(D, window=0)
    with pytest.raises(ValueError, match="unknown AFT impl"):
        AFTSimple(D, impl="exact")


RULES = {
    "attention": {},
    "attention_nopos": {},
    "aft_full": {"pos_bias": P.SSM},
    "aft_local": {"pos_bias": P.SSM},
    "aft_simple": {},
    "aft_conv": dict.fromkeys(["aft_conv_kernel", "aft_conv_gain", "aft_conv_shift"], P.SSM),
}


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_declared_rules_name_own_parameters(name):
    module = MIXERS[name]()
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 2, D)))["params"]
    own = {key for key, leaf in shapes.items() if not isinstance(leaf, dict)}
    declared = P.declared_rules(module)
    assert declared == RULES[name]  # the position biases as SSM decays; Dense: Flax's rules
    assert set(declared) <= own


STATES = {
    "attention": (KVCache, {"k": (2, MAX_LEN, 4, D // 4), "v": (2, MAX_LEN, 4, D // 4)}),
    "aft_full": (AFTCache, {"k": (2, MAX_LEN, D), "v": (2, MAX_LEN, D)}),
    "aft_local": (AFTWindow, {"k": (2, 3 - 1, D), "v": (2, 3 - 1, D)}),
    "aft_conv": (AFTWindow, {"k": (2, 3 - 1, D), "v": (2, 3 - 1, D)}),
    "aft_simple": (AFTSimpleState, {"num": (2, D), "den": (2, D), "max": (2, D)}),
}


@pytest.mark.parametrize("name", sorted(STATES))
def test_states_are_named_tuples(name):
    module = MIXERS[name]()
    x = jax.random.normal(jax.random.key(0), (2, 5, D))
    params = random_params(module, x)
    prefill = lambda m, x: m.prefill(m.init_state(2), x)
    state, _ = jax.jit(lambda p: module.apply(p, x, method=prefill))(params)
    kind, shapes = STATES[name]
    assert type(state) is kind
    assert {field: getattr(state, field).shape for field in shapes} == shapes
    if kind is AFTWindow:
        assert type(state.running) is AFTSimpleState
        assert state.running.num.shape == (2, D)
    if "pos" in kind._fields:  # the benchmark moves a state with _replace(pos=...)
        assert state.pos.shape == () and state.pos.dtype == jnp.int32 and int(state.pos) == 5
        assert int(state._replace(pos=jnp.asarray(9, jnp.int32)).pos) == 9


def test_state_sizes_fixed_window_vs_growing_cache():
    x = jnp.zeros((2, 3, D))
    sizes = {}
    for name in ["attention", "aft_full", "aft_local", "aft_simple", "aft_conv"]:
        module = MIXERS[name]()
        params = jax.eval_shape(module.init, jax.random.key(0), x)
        state = jax.eval_shape(lambda p, m=module: m.apply(p, 2, method="init_state"), params)
        sizes[name] = sum(a.size for a in jax.tree.leaves(state))
    assert sizes["attention"] == 2 * 2 * MAX_LEN * D + 1
    assert sizes["aft_full"] == 2 * 2 * MAX_LEN * D + 1
    assert sizes["aft_simple"] == 3 * 2 * D
    assert sizes["aft_local"] == 2 * 2 * (3 - 1) * D + 3 * 2 * D + 1


# ------------------------------------------------- factorised position bias (U V^T)

RANK = 3
LOW_RANK = {
    "aft_full": lambda **kw: AFTFull(D, max_len=MAX_LEN, **kw),
    "aft_local": lambda **kw: AFTLocal(D, window=3, max_len=MAX_LEN, **kw),
}


def as_dense(params):
    """The factorised layer's parameters for the dense layer: pos_bias = U V^T."""
    inner = dict(params["params"])
    u, v = inner.pop("pos_bias_u"), inner.pop("pos_bias_v")
    inner["pos_bias"] = jnp.asarray(np.asarray(u, np.float64) @ np.asarray(v, np.float64).T)
    return {"params": inner}


@pytest.mark.parametrize("name", sorted(LOW_RANK))
@pytest.mark.parametrize("causal", [True, False])
def test_factorised_bias_equals_dense_bias_u_vt(name, causal):
    low = LOW_RANK[name](pos_bias_rank=RANK, causal=causal)
    dense = LOW_RANK[name](causal=causal)
    x = jax.random.normal(jax.random.key(3), (2, 7, D))
    params = random_params(low, x)
    dense_params = as_dense(params)
    y = jax.jit(low.apply)(params, x)
    assert not np.allclose(y, jax.jit(dense.apply)(jax.tree.map(jnp.zeros_like, dense_params), x))
    np.testing.assert_allclose(y, jax.jit(dense.apply)(dense_params, x), rtol=1e-5, atol=1e-5)
    if causal:  # the recurrent forms read rows of U V^T (cache: all of V; window: a gather)

        @jax.jit
        def recurrent(params):
            y_rec, _ = protocol.recurrent_apply(low, params, x)
            y_pre, _ = protocol.prefill_then_step(low, params, x, split=3)
            return y_rec, y_pre

        for y_other in recurrent(params):
            np.testing.assert_allclose(y_other, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LOW_RANK))
def test_factorised_bias_parameters_rules_and_init(name):
    x = jnp.zeros((1, 2, D))
    count = lambda m: {  # noqa: E731
        k: a.shape
        for k, a in jax.eval_shape(m.init, jax.random.key(0), x)["params"].items()
        if not isinstance(a, dict)
    }
    low, dense = LOW_RANK[name](pos_bias_rank=RANK), LOW_RANK[name]()
    assert count(dense) == {"pos_bias": (MAX_LEN, MAX_LEN)}
    assert count(low) == {"pos_bias_u": (MAX_LEN, RANK), "pos_bias_v": (MAX_LEN, RANK)}
    assert P.declared_rules(low) == {"pos_bias_u": P.SSM, "pos_bias_v": P.SSM}
    # Init: U = 0 so w = U V^T = 0 (the layer starts as AFT-simple, like the dense one),
    # V random so that U gets a gradient from the first step.
    x = jax.random.normal(jax.random.key(1), (1, 5, D))
    params = low.init(jax.random.key(0), x)
    u, v = params["params"]["pos_bias_u"], params["params"]["pos_bias_v"]
    assert np.all(u == 0) and np.all(v != 0)
    np.testing.assert_allclose(np.std(v), RANK**-0.5, rtol=0.3)
    grads = jax.grad(lambda p: jnp.sum(low.apply(p, x) ** 2))(params)["params"]
    assert np.any(grads["pos_bias_u"] != 0)
    with pytest.raises(ValueError, match="pos_bias_rank=0"):
        LOW_RANK[name](pos_bias_rank=0)


# ----------------------------------------------------------------- padding mask

PADDED = {
    **{n: MIXERS[n] for n in ["aft_full", "aft_local", "aft_simple", "aft_conv"]},
    "aft_full_low_rank": lambda **kw: AFTFull(D, max_len=MAX_LEN, pos_bias_rank=RANK, **kw),
}


@pytest.mark.parametrize("name", sorted(PADDED))
def test_bidirectional_outputs_do_not_depend_on_the_padding(name):
    # Example 0 has 6 real tokens, example 1 has 3; padded to 8 and to 12, with different
    # random pad vectors. Outputs at real positions must agree; pad rows stay finite.
    module = PADDED[name](causal=False)
    lengths = np.array([6, 3])
    real = jax.random.normal(jax.random.key(0), (2, 6, D))
    params = random_params(module, real)
    apply = jax.jit(lambda p, x, mask: module.apply(p, x, mask=mask))

    def padded(total, seed):
        pads = 3.0 * jax.random.normal(jax.random.key(seed), (2, total, D))
        mask = np.arange(total)[None, :] < lengths[:, None]
        x = jnp.where(mask[..., None], jnp.pad(real, ((0, 0), (0, total - 6), (0, 0))), pads)
        return apply(params, x, jnp.asarray(mask)), mask

    y8, mask8 = padded(8, 1)
    y12, _ = padded(12, 2)
    assert np.all(np.isfinite(y8)) and np.all(np.isfinite(y12))
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(y8[b, :n], y12[b, :n], rtol=1e-5, atol=1e-5)
    # ... and equal the unpadded example run alone
    alone = apply(params, real[1:, :3], None)
    np.testing.assert_allclose(y8[1, :3], alone[0], rtol=1e-5, atol=1e-5)
    # without the mask the padding does reach the real positions (the test is not vacuous)
    x8 = jnp.where(mask8[..., None], jnp.pad(real, ((0, 0), (0, 2), (0, 0))), 1.0)
    assert not np.allclose(apply(params, x8, None)[0, :6], y8[0, :6], atol=1e-5)
    # an all-padding example: no real key anywhere, still finite
    y_none = apply(params, x8, jnp.zeros((2, 8), bool))
    assert np.all(np.isfinite(y_none))


def test_gpt_neox_options_are_checked():
    with pytest.raises(ValueError, match="rotates an even number"):
        arch.build("transformer", vocab_size=8, d_model=32, n_heads=4, rotary_fraction=0.1)
    with pytest.raises(ValueError, match="rotary_fraction"):
        arch.build("transformer", vocab_size=8, d_model=32, rotary_fraction=1.5)
    with pytest.raises(ValueError, match="parallel_residual=True needs a channel mixer"):
        arch.build("mamba", vocab_size=8, parallel_residual=True)
    with pytest.raises(ValueError, match="unknown MLP activation"):
        model = arch.build("transformer", vocab_size=8, channel_options={"activation": "relu"})
        model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
