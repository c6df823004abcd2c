"""Mamba weights from ``transformers`` MambaForCausalLM or the state-spaces checkpoints.

    params = from_hf_state_dict(load_checkpoint("pytorch_model.bin"), n_layers=24)
    model = arch.build("mamba", vocab_size=50280, d_model=768, n_layers=24)
    logits = model.apply(params, tokens)

Torch conv1d weight ``[E, 1, K]`` becomes our ``conv_weight [K, E]`` (tap k multiplies
x_{t-K+1+k}, the same cross-correlation torch computes with left padding K-1).
"""

from __future__ import annotations

from collections.abc import Mapping

from arch.convert.common import CheckpointFormatError, linear, load_state_dict, norm, take

PREFIXES = ("backbone.embeddings.", "backbone.embedding.")  # HF, original checkpoints


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint file (``.bin``/``.pth`` via torch, or ``.safetensors``)."""
    return load_state_dict(path)


def from_hf_state_dict(state: Mapping, *, n_layers: int) -> dict:
    """``{"params": ...}`` for ``arch.build("mamba", ...)`` from a MambaForCausalLM state dict."""
    embed = next((p + "weight" for p in PREFIXES if p + "weight" in state), None)
    if embed is None:
        raise CheckpointFormatError(
            "not a Mamba state dict: no backbone.embeddings.weight "
            "(transformers) or backbone.embedding.weight (original)"
        )
    backbone = {
        "embedding": {"embedding": take(state, embed)},
        "norm_f": norm(state, "backbone.norm_f"),
    }
    for i in range(n_layers):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        mixer = {
            "in_proj": linear(state, m + "in_proj"),
            "conv_weight": take(state, m + "conv1d.weight")[:, 0, :].T,
            "x_proj": linear(state, m + "x_proj"),
            "dt_proj": {"kernel": take(state, m + "dt_proj.weight").T},
            "dt_bias": take(state, m + "dt_proj.bias"),
            "A_log": take(state, m + "A_log"),
            "D": take(state, m + "D"),
            "out_proj": linear(state, m + "out_proj"),
        }
        if m + "conv1d.bias" in state:
            mixer["conv_bias"] = take(state, m + "conv1d.bias")
        backbone[f"blocks_{i}"] = {"norm1": norm(state, p + "norm"), "mixer": mixer}
    if f"backbone.layers.{n_layers}.norm.weight" in state:
        raise CheckpointFormatError(f"the checkpoint has more than n_layers={n_layers} layers")
    return {"params": {"backbone": backbone}}
