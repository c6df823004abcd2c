"""Mamba-2 weights from ``transformers`` Mamba2ForCausalLM (or state-spaces/mamba2-*).

    params = from_hf_state_dict(load_checkpoint("model.safetensors"), n_layers=24)
    model = arch.build("mamba2", vocab_size=50288, d_model=768, n_layers=24,
                       d_state=128, head_dim=64, n_groups=1)
    logits = model.apply(params, tokens)

Our ``mamba2`` ties the head to the embedding, as the state-spaces checkpoints do; a
state dict with a different ``lm_head.weight`` is refused. The conv weight ``[C, 1, K]``
becomes ``conv_weight [K, C]`` (see ``arch.convert.mamba``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from arch.convert.common import CheckpointFormatError, linear, load_state_dict, norm, take

PREFIXES = ("backbone.embeddings.", "backbone.embedding.")  # transformers, mamba_ssm


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint file (``.bin``/``.pth`` via torch, or ``.safetensors``)."""
    return load_state_dict(path)


def from_hf_state_dict(state: Mapping, *, n_layers: int) -> dict:
    """``{"params": ...}`` for ``arch.build("mamba2", ...)`` from a Mamba-2 state dict."""
    embed = next((p + "weight" for p in PREFIXES if p + "weight" in state), None)
    if embed is None or "backbone.layers.0.mixer.norm.weight" not in state:
        raise CheckpointFormatError(
            "not a Mamba-2 state dict: no backbone.embeddings.weight with a gated "
            "norm (backbone.layers.0.mixer.norm.weight)"
        )
    embedding = take(state, embed)
    if "lm_head.weight" in state and not np.array_equal(take(state, "lm_head.weight"), embedding):
        raise CheckpointFormatError(
            "the checkpoint's lm_head is not tied to its embedding; arch 'mamba2' ties them "
            "(as the state-spaces Mamba-2 checkpoints do)"
        )
    backbone = {"embedding": {"embedding": embedding}, "norm_f": norm(state, "backbone.norm_f")}
    for i in range(n_layers):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        mixer = {
            "in_proj": linear(state, m + "in_proj"),
            "conv_weight": take(state, m + "conv1d.weight")[:, 0, :].T,
            "dt_bias": take(state, m + "dt_bias"),
            "A_log": take(state, m + "A_log"),
            "D": take(state, m + "D"),
            "norm_weight": take(state, m + "norm.weight"),
            "out_proj": linear(state, m + "out_proj"),
        }
        if m + "conv1d.bias" in state:
            mixer["conv_bias"] = take(state, m + "conv1d.bias")
        backbone[f"blocks_{i}"] = {"norm1": norm(state, p + "norm"), "mixer": mixer}
    if f"backbone.layers.{n_layers}.norm.weight" in state:
        raise CheckpointFormatError(f"the checkpoint has more than n_layers={n_layers} layers")
    return {"params": {"backbone": backbone}}
