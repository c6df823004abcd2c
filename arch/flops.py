"""Model FLOPs: the arithmetic a language model needs per token, counted analytically.

Model-FLOPs utilisation (MFU, Chowdhery et al. 2022, PaLM appendix B) divides these by
the step time and by the machine's matmul rate. They count the work the model *needs*,
independent of the implementation: recomputation in the backward pass, the extra work
of a chunked or associative scan and the masked half of a causal attention matrix are
not model FLOPs, so they show up as lower utilisation rather than as more work.

Per token, forward (a multiply-add is 2 FLOPs):

- **weights**: 2 x every parameter with two or more dimensions, except the token
  embedding (a gather), times how often each token uses it. Dense kernels, depthwise
  convolution taps, low-rank (LoRA) projections, block-diagonal gates and S5's B and C
  are used once. A mixer whose >= 2-D parameters are not per-token matrices (S4's
  Lambda, B, C, P; Mamba's A_log) or are used by some tokens only (mixture-of-experts)
  says so with ``weight_uses()``.
- **head**: 2 x d_model x vocab (also when tied to the embedding).
- **sequence mixing**: the mixer's ``sequence_flops(length)``, its own docstring says
  what it counts (attention scores and values; a recurrence's input, state update and
  read-out; an FFT convolution).

Element-wise work (norms, activations, gates, exp of a decay) is not counted, as in
Kaplan et al. 2020 (section 2.1) and PaLM. Training = 3 x forward: the backward pass
multiplies by each weight twice (Kaplan et al. 2020, section 2.1).

Both hooks are optional: a new mixer without them has all its >= 2-D parameters counted
once and no sequence term. ``tests/arch/test_flops.py`` checks the totals against XLA's
own count (``cost_analysis``) for every benchmarked architecture.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from arch.heads import LanguageModel

TRAIN_MULTIPLIER = 3  # forward + backward (2x forward): Kaplan et al. 2020, section 2.1


def _module(factory, layer: int, n_layers: int):
    return None if factory is None else factory(layer_id=layer, n_layers=n_layers)


def _weight_flops(subtree, uses: Mapping[str, float]) -> float:
    """2 x sum of >= 2-D leaves, each scaled by ``uses[top-level name]`` (default 1)."""
    total = 0.0
    for name, value in subtree.items():
        scale = uses.get(name, 1.0)
        for leaf in jax.tree.leaves(value):
            if len(leaf.shape) >= 2:
                total += 2.0 * scale * _size(leaf.shape)
    return total


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def forward_flops_per_token(model, params, length: int) -> dict[str, float]:
    """{"weights", "head", "sequence", "total"}: forward FLOPs per token of ``model``
    (from ``arch.build``; a language model, or a classifier without its per-sequence
    head) with ``params`` (arrays or ShapeDtypeStructs) on sequences of ``length``."""
    backbone = model.backbone
    tree = params["params"] if "params" in params else params
    bb = tree["backbone"]
    weights = sequence = 0.0
    for i in range(backbone.n_layers):
        block = bb[f"blocks_{i}"]
        for key, factory in (
            ("mixer", backbone.mixer_factory),
            ("channel_mixer", backbone.channel_factory),
        ):
            module = _module(factory, i, backbone.n_layers)
            if module is None or key not in block:
                continue
            uses = module.weight_uses() if hasattr(module, "weight_uses") else {}
            weights += _weight_flops(block[key], uses)
            if hasattr(module, "sequence_flops"):
                sequence += float(module.sequence_flops(length))
    # Learned positions or a CLS vector are added, not multiplied: not counted. A
    # classifier's head reads one pooled vector per sequence: nothing per token.
    lm = isinstance(model, LanguageModel)
    head = 2.0 * backbone.d_model * backbone.vocab_size if lm else 0.0
    return {
        "weights": weights,
        "head": head,
        "sequence": sequence,
        "total": weights + head + sequence,
    }


def train_flops(model, params, batch: int, length: int) -> float:
    """Model FLOPs of one training step (forward + backward) on ``batch`` sequences."""
    per_token = forward_flops_per_token(model, params, length)["total"]
    return TRAIN_MULTIPLIER * per_token * batch * length
