"""The optimizer: parameter groups, weight decay per group, the learning-rate schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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


LABELS = {
    "dense": {"kernel": "default", "bias": "no_decay"},
    "norm": {"scale": "no_decay"},
    "mixer": {"A_log": "ssm", "D": "ssm"},
}


def one_update(params, grads, cfg, labels=LABELS):
    tx = optim.make_optimizer(cfg, labels)
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
    schedules = optim.group_schedules(cfg)

    def expected(peak, t):
        if t < warmup:
            return peak * t / warmup
        progress = min((t - warmup) / (13 - warmup), 1.0)  # holds at the floor after
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    for t in range(0, 15):
        np.testing.assert_allclose(schedules["default"](t), expected(LR, t), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(schedules["ssm"](t), expected(SSM_LR, t), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- labels of real architectures


def _arch_or_skip():
    try:
        import arch.registry  # noqa: F401  (imports every mixer)
    except ImportError as error:
        pytest.skip(f"the arch registry does not import yet: {error}")
    import arch

    return arch


def _leaf_labels(arch, name):
    model = arch.build(name, vocab_size=7, d_model=8, n_layers=1, max_len=8)
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]  # shapes suffice
    labels = arch.param_labels(params)
    flat = jax.tree_util.tree_flatten_with_path(labels)[0]
    return {jax.tree_util.keystr(path): label for path, label in flat}


# Published SSM / decay parameters that must get the SSM learning rate and no decay.
MUST_BE_SSM = {"mamba": ("A_log", "D"), "rwkv": ("time_decay", "time_first", "time_mix")}
HAS_SSM = ("mamba", "rwkv", "s4", "s4d")


def test_every_registered_arch_labels_its_parameters():
    arch = _arch_or_skip()
    for name, spec in sorted(arch.ARCHS.items()):
        labels = _leaf_labels(arch, name)
        declared = set(getattr(spec.mixer, "SSM_PARAMS", ()))
        ssm_leaves = {p for p, g in labels.items() if g == "ssm"}
        for path, group in labels.items():
            leaf = path.rsplit("['", 1)[-1].rstrip("']")
            if leaf == "kernel":
                assert group == "default", (name, path)
            if leaf in ("bias", "scale", "embedding", "positions"):
                assert group == "no_decay", (name, path)
            if leaf in declared:
                assert group == "ssm", (name, path)
        for prefix in MUST_BE_SSM.get(name, ()):
            hits = [p for p in labels if p.rsplit("['", 1)[-1].startswith(prefix)]
            assert hits and all(labels[p] == "ssm" for p in hits), (name, prefix, hits)
        if name in HAS_SSM:
            assert ssm_leaves, f"{name} declares no SSM parameters"
        if name == "transformer":
            assert not ssm_leaves


def test_zero_gradients_decay_only_default_leaves_of_mamba():
    arch = _arch_or_skip()
    model = arch.build("mamba", vocab_size=7, d_model=8, n_layers=1, max_len=8)
    init = jax.jit(model.init)  # jitted: eager op-by-op dispatch is slower here
    params = init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    cfg = train_cfg()
    new = jax.jit(lambda p: one_update(p, jax.tree.map(jnp.zeros_like, p), cfg, arch.param_labels))(
        params
    )
    labels = arch.param_labels(params)
    seen = set()
    for p, q, group in zip(
        jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(labels), strict=True
    ):
        seen.add(group)
        factor = 1 - LR * WD if group == "default" else 1.0
        np.testing.assert_allclose(q, np.asarray(p) * factor, rtol=1e-6, err_msg=group)
    assert seen == {"default", "no_decay", "ssm"}
