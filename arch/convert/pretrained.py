"""``load_pretrained``: one entry point from a released checkpoint to (model, params).

    model, params, tokenizer_file = arch.convert.load_pretrained("pythia-160m/")
    logits = model.apply(params, tokens)

What it reads:

- a directory written by transformers' ``save_pretrained`` (or downloaded from the Hub):
  ``config.json`` picks the architecture by ``model_type`` (``gpt_neox`` -> our
  ``transformer`` with the GPT-NeoX options, ``rwkv``, ``mamba``, ``mamba2``), the weights
  come from ``model.safetensors`` (sharded too) or ``pytorch_model.bin``;
- a state-spaces ``mamba-*`` directory (``config.json`` with ``d_model``/``n_layer``/
  ``ssm_cfg``, weights in ``pytorch_model.bin``);
- a BlinkDL RWKV-4 ``.pth`` file (shapes and layer count read off the tensors).

The tokenizer is the directory's ``tokenizer.json`` when it has one (returned as a
path; ``experiments.tokenizer.load_tokenizer`` reads it), else None: the RWKV-4, Pythia
and Mamba releases all use the GPT-NeoX-20B tokenizer, which the user supplies.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from arch.convert import gpt_neox, mamba, mamba2, rwkv
from arch.convert.common import CheckpointFormatError, load_state_dict, take

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin")


class Pretrained(NamedTuple):
    model: Any  # a flax module from arch.build
    params: dict  # {"params": ...}
    tokenizer_file: str | None  # the directory's tokenizer.json, if any


def _config_int(config: Mapping, key: str, where: str) -> int:
    if key not in config:
        raise CheckpointFormatError(f"{where}: config.json has no {key!r}")
    return int(config[key])


def _vocab(state: Mapping, key: str) -> int:
    """The embedding's rows: padded vocabularies (Mamba's 50280) say so only here."""
    return int(take(state, key).shape[0])


def _gpt_neox(config, state, where):
    options = gpt_neox.build_options(config)
    params = gpt_neox.from_hf_state_dict(
        state,
        n_layers=options["n_layers"],
        n_heads=options["n_heads"],
        tie_embeddings=options["tie_embeddings"],
    )
    options["vocab_size"] = _vocab(state, "gpt_neox.embed_in.weight")
    return "transformer", options, params


def _rwkv_hf(config, state, where):
    d_model = _config_int(config, "hidden_size", where)
    n_layers = _config_int(config, "num_hidden_layers", where)
    options = dict(
        vocab_size=_vocab(state, "rwkv.embeddings.weight"),
        d_model=d_model,
        n_layers=n_layers,
        norm_eps=config.get("layer_norm_epsilon", 1e-5),
        max_len=config.get("context_length", 1024),
        d_attention=config.get("attention_hidden_size") or d_model,
        channel_options={"hidden": config.get("intermediate_size") or 4 * d_model},
    )
    # rescale_every: transformers halves weights and activations every k layers in eval
    # mode, an fp16 overflow guard that leaves the maths unchanged; the stored weights
    # are unscaled, which is what we read.
    return "rwkv", options, rwkv.from_hf_state_dict(state, n_layers=n_layers)


def _mamba_options(state, *, d_model, n_layers, d_state, expand, d_conv, dt_rank, eps, bias):
    return dict(
        vocab_size=_vocab(state, _mamba_embedding(state)),
        d_model=d_model,
        n_layers=n_layers,
        norm_eps=eps,
        d_state=d_state,
        expand=expand,
        d_conv=d_conv,
        dt_rank=dt_rank,
        bias=bias,
        conv_bias="backbone.layers.0.mixer.conv1d.bias" in state,
    )


def _mamba_embedding(state) -> str:
    names = [p + "weight" for p in mamba.PREFIXES if p + "weight" in state]
    if not names:
        raise CheckpointFormatError("not a Mamba state dict: no backbone.embeddings.weight")
    return names[0]


def _with_head(params: dict, state: Mapping, options: dict, tied: bool) -> dict:
    """A Mamba checkpoint with an lm_head of its own (``tie_word_embeddings=False``)."""
    options["tie_embeddings"] = tied
    if not tied:
        params["params"]["head"] = {"kernel": take(state, "lm_head.weight").T}
    return params


def _mamba_hf(config, state, where):
    d_model = _config_int(config, "hidden_size", where)
    n_layers = _config_int(config, "num_hidden_layers", where)
    rank = config.get("time_step_rank", "auto")
    options = _mamba_options(
        state,
        d_model=d_model,
        n_layers=n_layers,
        d_state=config.get("state_size", 16),
        expand=config.get("expand", 2),
        d_conv=config.get("conv_kernel", 4),
        dt_rank=math.ceil(d_model / 16) if rank == "auto" else int(rank),
        eps=config.get("layer_norm_epsilon", 1e-5),
        bias=bool(config.get("use_bias", False)),
    )
    params = mamba.from_hf_state_dict(state, n_layers=n_layers)
    tied = bool(config.get("tie_word_embeddings", True))
    return "mamba", options, _with_head(params, state, options, tied)


def _mamba_original(config, state, where):
    """state-spaces/mamba-* (mamba_ssm's MambaConfig: d_model, n_layer, ssm_cfg)."""
    d_model = _config_int(config, "d_model", where)
    n_layers = _config_int(config, "n_layer", where)
    ssm = config.get("ssm_cfg") or {}
    if ssm.get("layer", "Mamba1") != "Mamba1":
        raise CheckpointFormatError(
            f"{where}: ssm_cfg.layer={ssm['layer']!r}; only Mamba1 original checkpoints are "
            "read (use the transformers Mamba-2 layout, model_type 'mamba2')"
        )
    if config.get("d_intermediate") or config.get("attn_layer_idx"):
        raise CheckpointFormatError(
            f"{where}: a hybrid mamba_ssm model (d_intermediate > 0 or attn_layer_idx: MLP "
            "or attention blocks between the Mamba layers) is not supported"
        )
    rank = ssm.get("dt_rank", "auto")
    options = _mamba_options(
        state,
        d_model=d_model,
        n_layers=n_layers,
        d_state=ssm.get("d_state", 16),
        expand=ssm.get("expand", 2),
        d_conv=ssm.get("d_conv", 4),
        dt_rank=math.ceil(d_model / 16) if rank == "auto" else int(rank),
        eps=config.get("norm_epsilon", 1e-5),
        bias=bool(ssm.get("bias", False)),
    )
    if not config.get("rms_norm", True):
        options["norm"] = "layer"
    params = mamba.from_hf_state_dict(state, n_layers=n_layers)
    return "mamba", options, _with_head(params, state, options, config.get("tie_embeddings", True))


def _mamba2_hf(config, state, where):
    d_model = _config_int(config, "hidden_size", where)
    n_layers = _config_int(config, "num_hidden_layers", where)
    options = dict(
        vocab_size=_vocab(state, _mamba_embedding(state)),
        d_model=d_model,
        n_layers=n_layers,
        norm_eps=config.get("layer_norm_epsilon", 1e-5),
        d_state=config.get("state_size", 128),
        head_dim=config.get("head_dim", 64),
        n_groups=config.get("n_groups", 1),
        expand=config.get("expand", 2),
        chunk_size=config.get("chunk_size", 256),
    )
    return "mamba2", options, mamba2.from_hf_state_dict(state, n_layers=n_layers)


READERS: dict[str, Callable] = {
    "gpt_neox": _gpt_neox,
    "rwkv": _rwkv_hf,
    "mamba": _mamba_hf,
    "mamba2": _mamba2_hf,
}


def _blinkdl_rwkv(state: Mapping, where: str):
    """A BlinkDL RWKV-4 ``.pth``: sizes from the tensors, layers counted."""
    if "emb.weight" not in state:
        raise CheckpointFormatError(
            f"{where}: not a BlinkDL RWKV-4 state dict (no emb.weight); give a "
            "save_pretrained directory for other models"
        )
    if "blocks.0.att.time_maa_x" in state or "blocks.0.att.time_faaaa" in state:
        raise CheckpointFormatError(f"{where}: an RWKV-5/6 checkpoint; only RWKV-4 .pth are read")
    n_layers = sum(1 for k in state if k.startswith("blocks.") and k.endswith(".ln1.weight"))
    vocab, d_model = take(state, "emb.weight").shape
    options = dict(
        vocab_size=int(vocab),
        d_model=int(d_model),
        n_layers=n_layers,
        d_attention=int(take(state, "blocks.0.att.key.weight").shape[0]),
        channel_options={"hidden": int(take(state, "blocks.0.ffn.key.weight").shape[0])},
        max_len=1024,  # RWKV-4 Pile models' ctx_len (only the Transformer's cache needs it)
    )
    return "rwkv", options, rwkv.from_blinkdl_state_dict(state, n_layers=n_layers)


def _weights_file(directory: str) -> str:
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    if os.path.isfile(os.path.join(directory, "model.safetensors.index.json")):
        return os.path.join(directory, "model.safetensors.index.json")
    raise CheckpointFormatError(
        f"{directory}: no weights file ({', '.join(WEIGHT_FILES)} or a sharded "
        "model.safetensors.index.json)"
    )


def _read_weights(path: str) -> dict:
    if not path.endswith(".index.json"):
        return load_state_dict(path)
    with open(path) as f:
        shards = sorted(set(json.load(f).get("weight_map", {}).values()))
    state = {}
    for shard in shards:
        state.update(load_state_dict(os.path.join(os.path.dirname(path), shard)))
    return state


def _read_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointFormatError(
            f"{directory} has no config.json: give a directory written by save_pretrained "
            "(or a state-spaces mamba-* download), or a BlinkDL RWKV-4 .pth file"
        )
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointFormatError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{path}: a JSON object expected")
    return config


def _reader(config: Mapping, where: str) -> Callable:
    kind = config.get("model_type")
    if kind is None and {"d_model", "n_layer"} <= set(config):
        return _mamba_original
    if kind not in READERS:
        raise CheckpointFormatError(
            f"{where}: model_type {kind!r} is not supported; valid: {', '.join(READERS)} "
            "(or a BlinkDL RWKV-4 .pth)"
        )
    return READERS[kind]


def read_pretrained(path: str) -> tuple[str, dict, dict, str | None]:
    """(arch name, ``arch.build`` options, params, tokenizer.json or None), no model built."""
    if os.path.isdir(path):
        config = _read_config(path)
        reader = _reader(config, path)
        state = _read_weights(_weights_file(path))
        name, options, params = reader(config, state, path)
        tokenizer = os.path.join(path, "tokenizer.json")
        return name, options, params, tokenizer if os.path.isfile(tokenizer) else None
    if not os.path.exists(path):
        raise CheckpointFormatError(
            f"{path}: no such file or directory; give a save_pretrained directory or a "
            "BlinkDL RWKV-4 .pth"
        )
    name, options, params = _blinkdl_rwkv(load_state_dict(path), path)
    return name, options, params, None


def load_pretrained(path: str, **overrides) -> Pretrained:
    """Build the architecture a checkpoint holds and return it with its parameters.

    ``overrides`` go to ``arch.build`` on top of what the checkpoint says (e.g.
    ``impl="sequential"`` for a mixer's kernel, ``max_len`` for a longer KV cache).
    A parameter tree that does not match the built model (a truncated file, a layer
    count that disagrees with config.json) is refused with the first difference.
    """
    import jax
    import jax.numpy as jnp

    from arch.factory import build

    name, options, params, tokenizer = read_pretrained(path)
    model = build(name, **(options | overrides))
    params = jax.tree_util.tree_map(jnp.asarray, params)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    _check_tree(expected, params, path)
    return Pretrained(model, params, tokenizer)


def _check_tree(expected, params, where: str) -> None:
    want = {jax_path(p): x.shape for p, x in _leaves(expected)}
    got = {jax_path(p): x.shape for p, x in _leaves(params)}
    for key in sorted(want.keys() | got.keys()):
        if key not in got:
            raise CheckpointFormatError(f"{where}: the checkpoint lacks {key} {want[key]}")
        if key not in want:
            raise CheckpointFormatError(f"{where}: unexpected tensor {key} in the checkpoint")
        if tuple(want[key]) != tuple(got[key]):
            raise CheckpointFormatError(
                f"{where}: {key} has shape {tuple(got[key])}, the model expects {want[key]}"
            )


def _leaves(tree):
    import jax

    return jax.tree_util.tree_flatten_with_path(tree)[0]


def jax_path(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)
