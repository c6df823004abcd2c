"""AdamW with per-parameter-group learning rates and weight decay.

Three groups, labelled by ``arch.param_labels`` from names the modules declare:

- "default": Dense kernels and the like: ``lr``, ``weight_decay``;
- "no_decay": norms, biases, embeddings, positions: ``lr``, no decay;
- "ssm": state-space / decay parameters (Mamba's A_log, D; RWKV's time_decay, ...):
  ``ssm_lr``, ``ssm_weight_decay`` (0 by default), as state-spaces/s4 and S5 do.

Every group follows one schedule shape: linear warmup from 0, then cosine decay to
``min_lr_ratio`` times its peak (Loshchilov & Hutter, SGDR). Gradients are clipped by
their global norm over all groups first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

DEFAULT, NO_DECAY, SSM = "default", "no_decay", "ssm"


def schedule(peak: float, train_cfg) -> optax.Schedule:
    """Warmup to ``peak`` over ``warmup_steps``, cosine to ``min_lr_ratio * peak`` at ``steps``."""
    warmup = int(train_cfg.warmup_steps)
    total = max(int(train_cfg.steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=total,
        end_value=peak * train_cfg.min_lr_ratio,
    )


def group_schedules(train_cfg) -> dict[str, optax.Schedule]:
    """The learning-rate schedule of each group (for the optimizer and for logging)."""
    main = schedule(train_cfg.lr, train_cfg)
    return {DEFAULT: main, NO_DECAY: main, SSM: schedule(train_cfg.ssm_lr, train_cfg)}


def group_weight_decay(train_cfg) -> dict[str, float]:
    return {DEFAULT: train_cfg.weight_decay, NO_DECAY: 0.0, SSM: train_cfg.ssm_weight_decay}


def make_optimizer(
    train_cfg, labels: Any | Callable[[Any], Any] | None = None
) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW per group.

    ``labels`` is a pytree like the parameters with a group name at each leaf, or a
    function of the parameters returning one; by default ``arch.param_labels``.
    """
    if labels is None:
        from arch.labels import param_labels  # deferred: imports the registry

        labels = param_labels
    schedules = group_schedules(train_cfg)
    decay = group_weight_decay(train_cfg)
    groups = {
        name: optax.adamw(
            learning_rate=schedules[name],
            b1=train_cfg.b1,
            b2=train_cfg.b2,
            weight_decay=decay[name],
        )
        for name in (DEFAULT, NO_DECAY, SSM)
    }
    clip = [optax.clip_by_global_norm(train_cfg.grad_clip)] if train_cfg.grad_clip > 0 else []
    return optax.chain(*clip, optax.multi_transform(groups, labels))
