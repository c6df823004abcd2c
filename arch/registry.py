"""The explicit registry of architectures and ``build``.

``ARCHS`` maps a name to an ``ArchSpec``: the sequence mixer class, its default
options, and the block layout the published architecture uses. ``build`` turns a
name plus options into a Flax module; bad options fail here, with a sentence.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from flax import linen as nn

from arch.backbone import Backbone
from arch.channel import GLU, MLP
from arch.heads import POOLINGS, Classifier, DualEncoder, LanguageModel
from arch.mixers.aft import AFTConv, AFTFull, AFTLocal, AFTSimple
from arch.mixers.attention import Attention
from arch.mixers.mamba import Mamba
from arch.mixers.rwkv import RWKVChannelMix, RWKVTimeMix
from arch.mixers.s4 import S4, S4D

CHANNEL_MIXERS: dict[str, type[nn.Module] | None] = {
    "mlp": MLP,
    "glu": GLU,
    "rwkv": RWKVChannelMix,
    "none": None,
}
HEADS = ("lm", "classify", "retrieval")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    mixer: type[nn.Module]
    channel: str = "mlp"
    norm: str = "layer"
    prenorm: bool = True
    embed_norm: bool = False
    tie_embeddings: bool = False
    bidirectional_ok: bool = True
    mixer_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    doc: str = ""


ARCHS: dict[str, ArchSpec] = {
    "transformer": ArchSpec(Attention, channel="mlp", doc="multi-head softmax attention, RoPE"),
    "aft_full": ArchSpec(AFTFull, doc="AFT-full: learned pairwise position bias, O(T^2)"),
    "aft_local": ArchSpec(AFTLocal, doc="AFT-local: position bias within a window"),
    "aft_simple": ArchSpec(AFTSimple, doc="AFT-simple: no position bias"),
    "aft_conv": ArchSpec(AFTConv, doc="AFT-conv: per-head depthwise convolution bias"),
    "rwkv": ArchSpec(
        RWKVTimeMix,
        channel="rwkv",
        embed_norm=True,
        bidirectional_ok=False,
        doc="RWKV-4: TimeMix (WKV) + ChannelMix",
    ),
    "s4": ArchSpec(S4, channel="none", doc="S4: DPLR (HiPPO-LegS NPLR) state space layer"),
    "s4d": ArchSpec(S4D, channel="none", doc="S4D: diagonal state space layer"),
    "mamba": ArchSpec(
        Mamba,
        channel="none",
        norm="rms",
        tie_embeddings=True,
        bidirectional_ok=False,
        doc="Mamba: selective state space (S6) block",
    ),
}


def _unknown(what: str, name: str, valid) -> ValueError:
    return ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(valid))}")


def field_names(module_cls: type[nn.Module]) -> set[str]:
    return {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}


def build(
    name: str | ArchSpec,
    *,
    vocab_size: int | None = None,
    d_input: int | None = None,
    d_model: int = 64,
    n_layers: int = 2,
    head: str = "lm",
    n_classes: int | None = None,
    pooling: str = "mean",
    bidirectional: bool = False,
    dropout: float = 0.0,
    max_len: int = 2048,
    norm: str | None = None,
    prenorm: bool | None = None,
    channel: str | None = None,
    norm_eps: float = 1e-5,
    pos_emb: str = "none",
    **mixer_options: Any,
) -> nn.Module:
    """Build architecture ``name`` (a key of ``ARCHS``, or an ``ArchSpec``) with a head.

    ``pos_emb="learned"`` adds absolute positions (up to ``max_len``) to the
    embedding, for any mixer. ``mixer_options`` go to the sequence mixer (e.g.
    ``n_heads`` for transformer, ``d_state`` for s4/mamba); an option the mixer does
    not have is an error that lists the ones it has.
    """
    if isinstance(name, ArchSpec):  # a cell being prototyped, not (yet) in ARCHS
        spec, name = name, name.mixer.__name__
    elif name in ARCHS:
        spec = ARCHS[name]
    else:
        raise _unknown("architecture", name, ARCHS)
    if head not in HEADS:
        raise _unknown("head", head, HEADS)
    if pooling not in POOLINGS:
        raise _unknown("pooling", pooling, POOLINGS)
    if (vocab_size is None) == (d_input is None):
        raise ValueError("give exactly one of vocab_size (token ids) or d_input (features)")
    if head == "lm" and bidirectional:
        raise ValueError(
            "a language model must be causal: drop bidirectional=True or use head='classify'"
        )
    if head == "lm" and vocab_size is None:
        raise ValueError("head='lm' needs vocab_size")
    if head != "lm" and not n_classes:
        raise ValueError(f"head={head!r} needs n_classes")
    if bidirectional and not spec.bidirectional_ok:
        raise ValueError(
            f"{name} has no bidirectional form; valid bidirectional archs: "
            + ", ".join(n for n, s in ARCHS.items() if s.bidirectional_ok)
        )
    channel = spec.channel if channel is None else channel
    if channel not in CHANNEL_MIXERS:
        raise _unknown("channel mixer", channel, CHANNEL_MIXERS)

    valid = field_names(spec.mixer)
    options = {**spec.mixer_defaults, **mixer_options}
    unknown = set(options) - valid
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"the {spec.mixer.__name__} mixer takes: "
            + ", ".join(sorted(valid - {"d_model", "layer_id", "n_layers"}))
        )
    if "max_len" in valid:
        options.setdefault("max_len", max_len)
    if "causal" in valid:
        options["causal"] = not bidirectional
    mixer_factory = functools.partial(spec.mixer, d_model=d_model, **options)
    mixer_factory(layer_id=0, n_layers=n_layers)  # unbound: validates options now, not at init
    channel_cls = CHANNEL_MIXERS[channel]
    channel_factory = (
        None if channel_cls is None else functools.partial(channel_cls, d_model=d_model)
    )

    backbone = Backbone(
        mixer_factory=mixer_factory,
        channel_factory=channel_factory,
        d_model=d_model,
        n_layers=n_layers,
        vocab_size=vocab_size,
        d_input=d_input,
        norm=spec.norm if norm is None else norm,
        norm_eps=norm_eps,
        prenorm=spec.prenorm if prenorm is None else prenorm,
        dropout=dropout,
        embed_norm=spec.embed_norm,
        pos_emb=pos_emb,
        max_len=max_len,
    )
    if head == "lm":
        return LanguageModel(backbone=backbone, tie_embeddings=spec.tie_embeddings)
    if head == "classify":
        return Classifier(backbone=backbone, n_classes=n_classes, pooling=pooling)
    return DualEncoder(backbone=backbone, n_classes=n_classes, pooling=pooling)
