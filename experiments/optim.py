"""AdamW with a learning rate and weight decay per parameter, from the modules' own rules.

Each parameter carries an ``arch.params.ParamRule`` (declared by the module that owns
it; ``arch.param_rules`` collects them from the model actually built, and
``train.lr_mults`` / ``train.wd_mults`` refine them):

- ``base="lr"``: peak ``train.lr * lr_mult``, decay ``train.weight_decay * wd_mult``;
- ``base="ssm_lr"``: peak ``train.ssm_lr * lr_mult``, decay
  ``train.ssm_weight_decay * wd_mult`` (state-space / decay parameters, as
  state-spaces/s4 and S5 give A, B and dt their own rate and no decay).

Parameters with the same rule form one optax group. Every group follows one schedule
shape (``train.schedule``): "cosine", linear warmup from 0 then cosine decay to
``min_lr_ratio`` times its peak (Loshchilov & Hutter, SGDR); or "rsqrt", linear warmup
then decay as 1/sqrt(step) (the LRA Transformer's, Tay et al. 2021, from the Tensor2Tensor
``constant * linear_warmup * rsqrt_decay``). ``train.decay_all`` decays every parameter
by its base rate's weight decay, whatever its rule (the LRA trainers' flax
``optim.Adam(weight_decay=...)``). Gradients are clipped by their global norm over all
groups first.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from arch.params import DEFAULT, ParamRule

_WEIGHT_DECAY_FIELD = {"lr": "weight_decay", "ssm_lr": "ssm_weight_decay"}
SCHEDULES = ("cosine", "rsqrt")


def rsqrt_schedule(constant: float, warmup_steps: int) -> optax.Schedule:
    """``constant * min(1, step / warmup) / sqrt(max(step, warmup))``.

    The LRA trainers' ``create_learning_rate_scheduler`` with factors
    ``constant * linear_warmup * rsqrt_decay``: the peak, at ``warmup``, is
    ``constant / sqrt(warmup)``.
    """
    warmup = max(int(warmup_steps), 1)

    def fn(step):
        step = jnp.asarray(step, jnp.float32)
        return constant * jnp.minimum(1.0, step / warmup) / jnp.sqrt(jnp.maximum(step, warmup))

    return fn


def schedule(peak: float, train_cfg) -> optax.Schedule:
    """Warmup to ``peak`` over ``warmup_steps``, cosine to ``min_lr_ratio * peak`` at ``steps``.

    With ``train.schedule="rsqrt"``, ``peak`` is the constant of ``rsqrt_schedule``.
    """
    kind = train_cfg.get("schedule", "cosine")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown train.schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if kind == "rsqrt":
        return rsqrt_schedule(peak, train_cfg.warmup_steps)
    warmup = int(train_cfg.warmup_steps)
    total = max(int(train_cfg.steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=total,
        end_value=peak * train_cfg.min_lr_ratio,
    )


def peak_lr(rule: ParamRule, train_cfg) -> float:
    return float(train_cfg[rule.base]) * rule.lr_mult


def weight_decay(rule: ParamRule, train_cfg) -> float:
    base = rule.wd_base or rule.base
    mult = 1.0 if train_cfg.get("decay_all", False) else rule.wd_mult
    return float(train_cfg[_WEIGHT_DECAY_FIELD[base]]) * mult


def rule_schedule(rule: ParamRule, train_cfg) -> optax.Schedule:
    """The learning-rate schedule of the parameters with ``rule`` (also for logging)."""
    return schedule(peak_lr(rule, train_cfg), train_cfg)


def _is_rule(x) -> bool:
    return isinstance(x, ParamRule)


def groups(rules: Any) -> dict[str, ParamRule]:
    """``{label: rule}`` for the distinct rules of a rule pytree."""
    return {r.key: r for r in jax.tree.leaves(rules, is_leaf=_is_rule)}


def make_optimizer(train_cfg, rules: Any) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW per distinct rule.

    ``rules``: a pytree like the parameters with a ``ParamRule`` at each leaf
    (``arch.param_rules(model, *example_inputs)``).
    """
    labels = jax.tree.map(lambda r: r.key, rules, is_leaf=_is_rule)
    transforms = {
        key: optax.adamw(
            learning_rate=rule_schedule(rule, train_cfg),
            b1=train_cfg.b1,
            b2=train_cfg.b2,
            eps=train_cfg.get("eps", 1e-8),
            weight_decay=weight_decay(rule, train_cfg),
        )
        for key, rule in groups(rules).items()
    }
    clip = [optax.clip_by_global_norm(train_cfg.grad_clip)] if train_cfg.grad_clip > 0 else []
    return optax.chain(*clip, optax.multi_transform(transforms, labels))


def main_schedule(train_cfg) -> optax.Schedule:
    """The schedule of the default rule: the ``lr`` the training loop logs."""
    return rule_schedule(DEFAULT, train_cfg)
