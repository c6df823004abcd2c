"""From a config and a task spec to a model, and from a batch to logits.

This is the only place that knows how the three batch layouts of
``experiments.tasks.base`` map onto the three heads of ``arch.heads``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch.time_chunks import apply_in_time_chunks
from experiments.tasks.base import TaskSpec

HEAD_FOR_KIND = {"lm": "lm", "classify": "classify", "retrieval": "retrieval"}
# The batch entries each layout feeds the model, in call order (None = optional).
INPUTS_FOR_KIND = {
    "lm": ("inputs",),
    "classify": ("inputs", "mask"),
    "retrieval": ("inputs1", "inputs2", "mask1", "mask2"),
}


def build_model(config, spec: TaskSpec) -> nn.Module:
    """``arch.build`` with what the task fixes (vocabulary, head, classes, length).

    ``config.model`` supplies the rest (d_model, n_layers, dropout, mixer options).
    """
    import arch  # deferred: importing the registry imports every mixer

    options = dict(config.model)
    options.setdefault("max_len", spec.seq_len)
    options["max_len"] = max(options["max_len"], spec.seq_len)
    return arch.build(
        config.arch,
        vocab_size=spec.vocab_size,
        d_input=spec.d_input,
        head=HEAD_FOR_KIND[spec.kind],
        n_classes=spec.n_classes,
        **options,
    )


def batch_kind(batch: dict[str, Any]) -> str:
    """The layout of ``batch``: two documents, per-token targets, or one label each."""
    if "inputs1" in batch:
        return "retrieval"
    return "lm" if np.ndim(batch["targets"]) == 2 else "classify"


def model_inputs(batch: dict[str, Any], kind: str | None = None) -> tuple:
    """The positional model arguments of ``batch`` (absent optional masks are None)."""
    return tuple(batch.get(name) for name in INPUTS_FOR_KIND[kind or batch_kind(batch)])


def apply_model(
    model: nn.Module,
    params: Any,
    batch: dict[str, Any],
    *,
    train: bool = False,
    rngs: dict[str, jax.Array] | None = None,
    kind: str | None = None,
    time_chunk: int = 0,
) -> jax.Array:
    """Logits: ``[B, L, vocab]`` for "lm", ``[B, n_classes]`` for classify/retrieval.

    ``time_chunk`` > 0 ("lm" only): the same logits computed chunk by chunk along time
    through the recurrent state (``arch.time_chunks``; no dropout there)."""
    if time_chunk:
        return apply_in_time_chunks(model, {"params": params}, batch["inputs"], time_chunk)
    return model.apply({"params": params}, *model_inputs(batch, kind), train=train, rngs=rngs)


def apply_with_aux(
    model, params, batch, *, train=False, rngs=None, kind=None, time_chunk=0, recompute="dots"
):
    """(logits, the sum of the losses the layers sowed, the sown statistics).

    Layers add auxiliary losses to the ``"losses"`` collection (the MoE load-balancing
    and router z-losses, already weighted) and diagnostics to ``"moe_stats"``. With
    ``time_chunk`` (see ``apply_model``) each is the mean over the chunks, and
    ``recompute`` says what each chunk keeps for the backward (``arch.time_chunks``).
    """
    collections = ["losses", "moe_stats"]
    if time_chunk:
        logits, sown = apply_in_time_chunks(
            model,
            {"params": params},
            batch["inputs"],
            time_chunk,
            mutable=collections,
            recompute=recompute,
        )
    else:
        logits, sown = model.apply(
            {"params": params},
            *model_inputs(batch, kind),
            train=train,
            rngs=rngs,
            mutable=collections,
        )
    aux = sum((jnp.sum(v) for v in jax.tree.leaves(sown.get("losses", {}))), jnp.zeros(()))
    return logits, aux, sown.get("moe_stats", {})


def init_params(model: nn.Module, batch: dict[str, Any], key: jax.Array, kind: str | None = None):
    """Parameters (the ``"params"`` collection) initialised on ``batch``'s shapes."""
    variables = model.init(key, *model_inputs(batch, kind), train=False)
    return variables["params"]
