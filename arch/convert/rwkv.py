"""RWKV-4 weights from ``transformers`` RwkvForCausalLM or BlinkDL ``.pth`` files.

    params = from_blinkdl_state_dict(load_checkpoint("RWKV-4-Pile-169M.pth"), n_layers=12)
    model = arch.build("rwkv", vocab_size=50277, d_model=768, n_layers=12)

Both layouts hold the same tensors under different names; ``time_decay`` is stored
before the ``-exp`` (the mixer applies it) and ``time_first`` as used. transformers'
``rescale_every`` (weights rescaled in place in eval mode) must be 0 for these
weights to mean what they say.
"""

from __future__ import annotations

from collections.abc import Mapping

from arch.convert.common import CheckpointFormatError, linear, load_state_dict, norm, take

# Our name -> (transformers name, BlinkDL name), relative to a block.
_TIME_MIX = {
    "k": ("time_mix_key", "time_mix_k"),
    "v": ("time_mix_value", "time_mix_v"),
    "r": ("time_mix_receptance", "time_mix_r"),
}
_LAYOUTS = {
    "hf": dict(
        block="rwkv.blocks.{i}.",
        att="attention.",
        ffn="feed_forward.",
        ln0="pre_ln",
        emb="rwkv.embeddings.weight",
        ln_out="rwkv.ln_out",
        head="head",
        mix=0,
    ),
    "blinkdl": dict(
        block="blocks.{i}.",
        att="att.",
        ffn="ffn.",
        ln0="ln0",
        emb="emb.weight",
        ln_out="ln_out",
        head="head",
        mix=1,
    ),
}


def load_checkpoint(path: str) -> dict:
    """Read a ``.pth`` (torch) or ``.safetensors`` file into ``{name: ndarray}``."""
    return load_state_dict(path)


def _convert(state: Mapping, n_layers: int, layout: str) -> dict:
    lay = _LAYOUTS[layout]
    if lay["emb"] not in state:
        raise CheckpointFormatError(f"not a {layout} RWKV-4 state dict: {lay['emb']!r} missing")
    backbone = {
        "embedding": {"embedding": take(state, lay["emb"])},
        "norm0": norm(state, lay["block"].format(i=0) + lay["ln0"]),
        "norm_f": norm(state, lay["ln_out"]),
    }
    for i in range(n_layers):
        p = lay["block"].format(i=i)
        att, ffn = p + lay["att"], p + lay["ffn"]
        mixer = {
            "time_decay": take(state, att + "time_decay").reshape(-1),
            "time_first": take(state, att + "time_first").reshape(-1),
            **{
                f"time_mix_{c}": take(state, att + names[lay["mix"]]).reshape(-1)
                for c, names in _TIME_MIX.items()
            },
            **{
                name: linear(state, att + name) for name in ("key", "value", "receptance", "output")
            },
        }
        channel = {
            **{
                f"time_mix_{c}": take(state, ffn + _TIME_MIX[c][lay["mix"]]).reshape(-1)
                for c in ("k", "r")
            },
            **{name: linear(state, ffn + name) for name in ("key", "receptance", "value")},
        }
        backbone[f"blocks_{i}"] = {
            "norm1": norm(state, p + "ln1"),
            "mixer": mixer,
            "norm2": norm(state, p + "ln2"),
            "channel_mixer": channel,
        }
    if lay["block"].format(i=n_layers) + "ln1.weight" in state:
        raise CheckpointFormatError(f"the checkpoint has more than n_layers={n_layers} layers")
    return {"params": {"backbone": backbone, "head": linear(state, lay["head"])}}


def from_hf_state_dict(state: Mapping, *, n_layers: int) -> dict:
    """``{"params": ...}`` for ``arch.build("rwkv", ...)`` from RwkvForCausalLM's state dict."""
    return _convert(state, n_layers, "hf")


def from_blinkdl_state_dict(state: Mapping, *, n_layers: int) -> dict:
    """``{"params": ...}`` from a BlinkDL RWKV-4 ``.pth`` state dict."""
    return _convert(state, n_layers, "blinkdl")
