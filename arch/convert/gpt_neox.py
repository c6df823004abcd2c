"""GPT-NeoX / Pythia weights from ``transformers`` GPTNeoXForCausalLM state dicts.

    params = from_hf_state_dict(load_state_dict("model.safetensors"), n_layers=12, n_heads=12)
    model = arch.build("transformer", **build_options(config_json))

Pythia (Biderman et al. 2023) is GPT-NeoX (Black et al. 2022): pre-norm LayerNorms with
bias, parallel attention and MLP residuals, rotary positions on a quarter of each
head's channels, exact-erf GELU, an untied output matrix. Our ``transformer`` takes all
of these as options (``build_options``), so no second Transformer class exists.

The fused ``query_key_value`` weight ``[3D, D]`` is laid out per head as ``[heads, 3,
head_dim]`` (transformers' GPTNeoXAttention views it as ``(..., heads, 3 * head_size)``
and chunks q, k, v off the last axis); ours is ``[3, heads, head_dim]``
(``arch.mixers.attention``: "(three h d)"), so the rows are permuted here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from arch.convert.common import CheckpointFormatError, linear, norm, take

# transformers' hidden_act -> our MLP activation (ACT2FN: "gelu" is the erf form).
ACTIVATIONS = {
    "gelu": "gelu_exact",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}


def _rope(config: Mapping) -> tuple[float, float]:
    """(rope base, rotary fraction): transformers >= 5 writes ``rope_parameters``, older
    config.json files (the Pythia releases) ``rotary_emb_base`` and ``rotary_pct``."""
    rope = config.get("rope_parameters") or {}
    base = rope.get("rope_theta", config.get("rotary_emb_base", 10000.0))
    fraction = rope.get("partial_rotary_factor", config.get("rotary_pct", 0.25))
    if rope.get("rope_type", "default") != "default":
        raise CheckpointFormatError(
            f"rope_type {rope['rope_type']!r} (scaled rotary positions) is not supported; "
            "only the default rotary embedding of the Pythia checkpoints is"
        )
    return float(base), float(fraction)


def build_options(config: Mapping) -> dict:
    """``arch.build("transformer", **options)`` for a GPT-NeoX ``config.json``."""
    d_model, n_heads = config["hidden_size"], config["num_attention_heads"]
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointFormatError(
            f"hidden_act {act!r} is not supported; valid: {', '.join(ACTIVATIONS)}"
        )
    intermediate = config.get("intermediate_size") or 4 * d_model
    if intermediate % d_model:
        raise CheckpointFormatError(
            f"intermediate_size={intermediate} is not a multiple of hidden_size={d_model}"
        )
    if not config.get("attention_bias", True):
        raise CheckpointFormatError("attention_bias=False is not supported (Pythia has biases)")
    base, fraction = _rope(config)
    return dict(
        vocab_size=config["vocab_size"],
        d_model=d_model,
        n_layers=config["num_hidden_layers"],
        max_len=config.get("max_position_embeddings", 2048),
        norm="layer",
        norm_eps=config.get("layer_norm_eps", 1e-5),
        parallel_residual=config.get("use_parallel_residual", True),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        channel_options={"expand": intermediate // d_model, "activation": ACTIVATIONS[act]},
        n_heads=n_heads,
        pos="rope",
        rope_base=base,
        rotary_fraction=fraction,
    )


def _qkv(state: Mapping, name: str, n_heads: int) -> dict[str, np.ndarray]:
    """[heads, 3, head_dim] rows -> [3, heads, head_dim], as a Flax kernel [D, 3D]."""
    weight, bias = take(state, name + ".weight"), take(state, name + ".bias")
    d_in = weight.shape[1]
    head_dim = weight.shape[0] // (3 * n_heads)
    if 3 * n_heads * head_dim != weight.shape[0]:
        raise CheckpointFormatError(
            f"{name}.weight has {weight.shape[0]} rows, not 3 x heads ({n_heads}) x head_dim"
        )
    weight = weight.reshape(n_heads, 3, head_dim, d_in).transpose(1, 0, 2, 3)
    bias = bias.reshape(n_heads, 3, head_dim).transpose(1, 0, 2)
    return {"kernel": weight.reshape(-1, d_in).T, "bias": bias.reshape(-1)}


def from_hf_state_dict(
    state: Mapping, *, n_layers: int, n_heads: int, tie_embeddings: bool = False
) -> dict:
    """``{"params": ...}`` for ``arch.build("transformer", **build_options(config))``."""
    if "gpt_neox.embed_in.weight" not in state:
        raise CheckpointFormatError("not a GPT-NeoX state dict: gpt_neox.embed_in.weight missing")
    backbone = {
        "embedding": {"embedding": take(state, "gpt_neox.embed_in.weight")},
        "norm_f": norm(state, "gpt_neox.final_layer_norm"),
    }
    for i in range(n_layers):
        p = f"gpt_neox.layers.{i}."
        backbone[f"blocks_{i}"] = {
            "norm1": norm(state, p + "input_layernorm"),
            "norm2": norm(state, p + "post_attention_layernorm"),
            "mixer": {
                "qkv": _qkv(state, p + "attention.query_key_value", n_heads),
                "out": linear(state, p + "attention.dense"),
            },
            "channel_mixer": {
                "up": linear(state, p + "mlp.dense_h_to_4h"),
                "down": linear(state, p + "mlp.dense_4h_to_h"),
            },
        }
    if f"gpt_neox.layers.{n_layers}.input_layernorm.weight" in state:
        raise CheckpointFormatError(f"the checkpoint has more than n_layers={n_layers} layers")
    params = {"backbone": backbone}
    if not tie_embeddings:
        params["head"] = {"kernel": take(state, "embed_out.weight").T}
    return {"params": params}
