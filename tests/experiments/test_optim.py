"""The optimizer: parameter groups, weight decay per group, the learning-rate schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import arch
from arch import params as P
from configs.base import get_config, override
from experiments import optim

LR, SSM_LR, WD = 0.01, 0.002, 0.5


def train_cfg(**overrides):
    base = {
        "train.lr": LR,
        "train.ssm_lr": SSM_LR,
        "train.weight_decay": WD,
        "train.warmup_steps": 0,
        "train.steps": 10,
        "train.grad_clip": 1.0,
    }
    return override(get_config(), {**base, **overrides}).train


def tiny_params():
    r = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(r.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "dense": {"kernel": leaf(3, 4), "bias": leaf(4)},
        "norm": {"scale": leaf(4)},
        "mixer": {"A_log": leaf(4, 2), "D": leaf(4)},
    }


RULES = {
    "dense": {"kernel": P.DEFAULT, "bias": P.NO_DECAY},
    "norm": {"scale": P.NO_DECAY},
    "mixer": {"A_log": P.SSM, "D": P.SSM},
}


def one_update(params, grads, cfg, rules=RULES):
    tx = optim.make_optimizer(cfg, rules)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def test_zero_gradients_decay_only_the_default_group():
    params = tiny_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = one_update(params, zeros, train_cfg())
    # AdamW (Loshchilov & Hutter, Alg. 2): with zero moments only -lr * wd * theta remains.
    np.testing.assert_allclose(
        new["dense"]["kernel"], np.asarray(params["dense"]["kernel"]) * (1 - LR * WD), rtol=1e-6
    )
    for path in (("dense", "bias"), ("norm", "scale"), ("mixer", "A_log"), ("mixer", "D")):
        np.testing.assert_array_equal(new[path[0]][path[1]], params[path[0]][path[1]])


def test_each_group_steps_at_its_own_learning_rate():
    params = tiny_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)  # small: no clipping
    new = one_update(params, grads, train_cfg(**{"train.weight_decay": 0.0}))
    # Adam's first step (bias-corrected) moves every coordinate by lr * g / (|g| + eps).
    step = lambda lr: lr * 1e-3 / (1e-3 + 1e-8)  # noqa: E731
    for (group, leaf), lr in {
        ("dense", "kernel"): LR,
        ("norm", "scale"): LR,
        ("mixer", "A_log"): SSM_LR,
    }.items():
        moved = np.asarray(params[group][leaf]) - np.asarray(new[group][leaf])
        np.testing.assert_allclose(moved, step(lr), rtol=1e-5)


def test_gradients_are_clipped_by_global_norm():
    params = tiny_params()
    big = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    clip = optax.clip_by_global_norm(1.0)
    clipped, _ = clip.update(big, clip.init(params))
    n = sum(np.size(p) for p in jax.tree.leaves(params))
    np.testing.assert_allclose(clipped["dense"]["kernel"], 1.0 / math.sqrt(n), rtol=1e-5)
    # With clipping, Adam's first step is still lr * sign(g): direction survives.
    new = one_update(params, big, train_cfg(**{"train.weight_decay": 0.0}))
    np.testing.assert_allclose(params["norm"]["scale"] - new["norm"]["scale"], LR, rtol=1e-4)


@pytest.mark.parametrize("warmup", [0, 3])
def test_schedule_is_linear_warmup_then_cosine_to_min_ratio(warmup):
    cfg = train_cfg(**{"train.warmup_steps": warmup, "train.steps": 13, "train.min_lr_ratio": 0.1})
    schedules = {"default": optim.main_schedule(cfg), "ssm": optim.rule_schedule(P.SSM, cfg)}

    def expected(peak, t):
        if t < warmup:
            return peak * t / warmup
        progress = min((t - warmup) / (13 - warmup), 1.0)  # holds at the floor after
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    for t in range(0, 15):
        np.testing.assert_allclose(schedules["default"](t), expected(LR, t), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(schedules["ssm"](t), expected(SSM_LR, t), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- rules of real architectures


def _leaf_rules(name):
    model = arch.build(name, vocab_size=7, d_model=8, n_layers=1, max_len=8)
    rules = arch.param_rules(model, jnp.zeros((1, 4), jnp.int32))
    flat = jax.tree_util.tree_flatten_with_path(rules, is_leaf=lambda x: isinstance(x, P.ParamRule))
    return {P.path_string(path): rule for path, rule in flat[0]}


# Published SSM parameters that must get the SSM learning rate and no decay
# (state-spaces/s4's A, B, P, dt); RWKV's and Mamba's decays are never decayed.
MUST_BE_SSM = {"s4": ("Lambda", "P_", "B_"), "s4d": ("A_", "B_")}
NEVER_DECAYED = {
    "mamba": ("A_log", "D", "dt_bias"),
    "rwkv": ("time_decay", "time_first", "time_mix"),
}
HAS_SSM = ("s4", "s4d")


@pytest.mark.parametrize("name", sorted(arch.ARCHS))
def test_every_registered_arch_declares_its_rules(name):
    rules = _leaf_rules(name)
    ssm_leaves = {p for p, r in rules.items() if r == P.SSM}
    for path, rule in rules.items():
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "kernel":
            assert rule == P.DEFAULT, (name, path)
        if leaf in ("bias", "scale", "embedding", "positions"):
            assert rule == P.NO_DECAY, (name, path)
    for prefix in MUST_BE_SSM.get(name, ()):
        hits = [p for p in rules if p.rsplit("/", 1)[-1].startswith(prefix)]
        assert hits and all(rules[p] == P.SSM for p in hits), (name, prefix, hits)
    for prefix in NEVER_DECAYED.get(name, ()):
        hits = [p for p in rules if p.rsplit("/", 1)[-1].startswith(prefix)]
        assert hits and all(rules[p].wd_mult == 0 for p in hits), (name, prefix, hits)
    if name in HAS_SSM:
        assert ssm_leaves, f"{name} declares no SSM parameters"
    if name == "transformer":
        assert not ssm_leaves


@pytest.mark.parametrize("name", sorted(arch.ARCHS))
def test_declared_rules_name_real_parameters(name):
    """A PARAM_RULES entry that names no parameter (a typo) would silently do nothing."""
    model = arch.build(name, vocab_size=7, d_model=8, n_layers=1, max_len=8)
    tokens = jnp.zeros((1, 4), jnp.int32)
    by_module, shapes = P.module_rules(model, tokens)
    for path, rules in by_module.items():
        node = shapes
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        assert set(rules) <= set(node), (name, path, set(rules) - set(node))


def test_config_multipliers_refine_the_declared_rules():
    model = arch.build("mamba", vocab_size=7, d_model=8, n_layers=2, max_len=8)
    rules = arch.param_rules(
        model,
        jnp.zeros((1, 4), jnp.int32),
        lr_mults=[(".*/blocks_1/mixer/A_log", 0.5), (".*/A_log", 0.1)],
        wd_mults=[(".*/in_proj/kernel", 0.0)],
    )
    m0, m1 = (rules["backbone"][f"blocks_{i}"]["mixer"] for i in (0, 1))
    assert m0["A_log"] == P.NO_DECAY._replace(lr_mult=0.1)  # the second pattern
    assert m1["A_log"] == P.NO_DECAY._replace(lr_mult=0.5)  # the first match wins
    assert m0["in_proj"]["kernel"] == P.DEFAULT._replace(wd_mult=0.0)
    assert m0["D"] == P.NO_DECAY
    with pytest.raises(ValueError, match="regex, multiplier"):
        arch.param_rules(model, jnp.zeros((1, 4), jnp.int32), lr_mults=[("(", 1.0)])


def test_zero_gradients_decay_only_default_leaves_of_mamba():
    model = arch.build("mamba", vocab_size=7, d_model=8, n_layers=1, max_len=8)
    tokens = jnp.zeros((1, 4), jnp.int32)
    init = jax.jit(model.init)  # jitted: eager op-by-op dispatch is slower here
    params = init(jax.random.key(0), tokens)["params"]
    rules = arch.param_rules(model, tokens)
    cfg = train_cfg()
    new = jax.jit(lambda p: one_update(p, jax.tree.map(jnp.zeros_like, p), cfg, rules))(params)
    seen = set()
    flat_rules = jax.tree.leaves(rules, is_leaf=lambda x: isinstance(x, P.ParamRule))
    for p, q, rule in zip(jax.tree.leaves(params), jax.tree.leaves(new), flat_rules, strict=True):
        seen.add(rule)
        factor = 1 - LR * WD if rule == P.DEFAULT else 1.0
        np.testing.assert_allclose(q, np.asarray(p) * factor, rtol=1e-6, err_msg=str(rule))
    assert seen == {P.DEFAULT, P.NO_DECAY}


def test_lr_multiplier_reaches_the_update():
    params = tiny_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    rules = {**RULES, "norm": {"scale": P.NO_DECAY._replace(lr_mult=3.0)}}
    new = one_update(params, grads, train_cfg(**{"train.weight_decay": 0.0}), rules)
    moved = np.asarray(params["norm"]["scale"]) - np.asarray(new["norm"]["scale"])
    np.testing.assert_allclose(moved, 3 * LR * 1e-3 / (1e-3 + 1e-8), rtol=1e-5)


def test_rsqrt_schedule_is_the_lra_one():
    """LRA's train_utils: constant * min(1, step / warmup) / sqrt(max(step, warmup))."""
    cfg = train_cfg(**{"train.schedule": "rsqrt", "train.lr": 0.05, "train.warmup_steps": 1000})
    fn = optim.main_schedule(cfg)
    for step in (0, 1, 500, 1000, 1001, 4999):
        expected = 0.05 * min(1.0, step / 1000) / math.sqrt(max(step, 1000))
        np.testing.assert_allclose(float(fn(step)), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown train.schedule"):
        optim.main_schedule(train_cfg(**{"train.schedule": "linear"}))


def test_decay_all_decays_biases_and_norms_too():
    """flax optim.Adam(weight_decay=wd) decays every leaf by lr * wd (the LRA trainers)."""
    params = tiny_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = one_update(params, zeros, train_cfg(**{"train.decay_all": True}))
    for path in (("dense", "kernel"), ("dense", "bias"), ("norm", "scale")):
        old = np.asarray(params[path[0]][path[1]])
        np.testing.assert_allclose(new[path[0]][path[1]], old * (1 - LR * WD), rtol=1e-6)
    # The SSM group keeps its own decay (train.ssm_weight_decay, 0 here).
    np.testing.assert_array_equal(new["mixer"]["D"], params["mixer"]["D"])
