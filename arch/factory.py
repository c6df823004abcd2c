"""``build``: an architecture's name plus options -> a Flax model with its head.

Bad options fail here, each with a sentence naming the valid values; the per-
architecture defaults come from its ``ArchSpec`` in ``arch/registry.py``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any

from flax import linen as nn

from arch.backbone import Backbone
from arch.heads import POOLINGS, Classifier, DualEncoder, LanguageModel
from arch.registry import ARCHS, CHANNEL_MIXERS, ArchSpec, field_names, get, unknown_error

HEADS = ("lm", "classify", "retrieval")


def _positive_int(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= 1
    except TypeError:
        return False


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
    parallel_residual: bool = False,
    channel: str | None = None,
    norm_eps: float = 1e-5,
    pos_emb: str = "none",
    cls_token: bool = False,
    head_mlp: int | None = None,
    embed_dropout: float = 0.0,
    embed_std: float | None = None,
    channel_options: Mapping[str, Any] | None = None,
    tie_embeddings: bool | None = None,
    **mixer_options: Any,
) -> nn.Module:
    """Build architecture ``name`` (a key of ``ARCHS``, or an ``ArchSpec``) with a head.

    ``pos_emb`` ("learned" or "sinusoidal") adds absolute positions (up to ``max_len``)
    to the embedding, for any mixer. Classifier options (the LRA Transformer's):
    ``cls_token`` prepends a learned CLS vector (read with ``pooling="cls"``),
    ``head_mlp`` puts a hidden ReLU layer of that width in the head. ``embed_dropout``
    drops the embedded inputs, ``embed_std`` replaces the embedding init by N(0, std^2),
    ``channel_options`` go to the channel mixer (e.g. ``{"expand": 2}``).
    ``parallel_residual`` adds the mixer and channel branches of a block side by side
    (GPT-NeoX); ``tie_embeddings`` (None: the architecture's layout) reads the logits
    off the embedding matrix.
    ``mixer_options`` go to the sequence mixer (e.g. ``n_heads`` for transformer,
    ``d_state`` for s4/mamba); an option the mixer does not have is an error that lists
    the ones it has.
    """
    if isinstance(name, ArchSpec):  # a spec not (yet) registered
        spec, name = name, name.mixer.__name__
        spec.validate(name)
    else:
        spec = get(name)
    for field, value in (
        ("d_model", d_model),
        ("n_layers", n_layers),
        ("max_len", max_len),
        ("vocab_size", vocab_size),
        ("d_input", d_input),
    ):
        if value is not None and not _positive_int(value):
            raise ValueError(f"{field}={value!r} must be a positive int")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    if head not in HEADS:
        raise unknown_error("head", head, HEADS)
    if pooling not in POOLINGS:
        raise unknown_error("pooling", pooling, POOLINGS)
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
    if head != "lm" and tie_embeddings is not None:
        raise ValueError("tie_embeddings is a language-model option: use head='lm'")
    if parallel_residual and (channel or spec.channel) == "none":
        raise ValueError(f"parallel_residual=True needs a channel mixer; {name} has none")
    if head == "lm" and (cls_token or head_mlp):
        raise ValueError("cls_token and head_mlp are classifier options: use head='classify'")
    if cls_token and not bidirectional:
        raise ValueError(
            "cls_token=True needs bidirectional=True: a causal model's first position "
            "sees nothing of the sequence (use pooling='last' instead)"
        )
    if head_mlp is not None and not _positive_int(head_mlp):
        raise ValueError(f"head_mlp={head_mlp!r} must be a positive int (or None)")
    if not 0.0 <= embed_dropout < 1.0:
        raise ValueError(f"embed_dropout={embed_dropout!r} must be in [0, 1)")
    if bidirectional and not spec.bidirectional_ok:
        raise ValueError(
            f"{name} has no bidirectional form; valid bidirectional archs: "
            + ", ".join(n for n, s in ARCHS.items() if s.bidirectional_ok)
        )
    channel = spec.channel if channel is None else channel
    if channel not in CHANNEL_MIXERS:
        raise unknown_error("channel mixer", channel, CHANNEL_MIXERS)

    valid = field_names(spec.mixer)
    options = {**spec.mixer_defaults, **mixer_options}
    unknown = set(options) - valid
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"the {spec.mixer.__name__} mixer takes: "
            + ", ".join(sorted(valid - {"d_model", "layer_id", "n_layers"}))
        )
    if "max_len" in valid:  # a CLS vector makes every sequence one longer
        options.setdefault("max_len", max_len + int(cls_token))
    if "causal" in valid:
        options["causal"] = not bidirectional
    mixer_factory = functools.partial(spec.mixer, d_model=d_model, **options)
    mixer_factory(layer_id=0, n_layers=n_layers)  # unbound: validates options now, not at init
    channel_cls = CHANNEL_MIXERS[channel]
    channel_options = {
        **(spec.channel_defaults if channel == spec.channel else {}),
        **(channel_options or {}),
    }
    if channel_options and channel_cls is None:
        raise ValueError(f"channel_options given, but {name} has no channel mixer")
    if channel_cls is not None:
        unknown = set(channel_options) - (field_names(channel_cls) - {"d_model"})
        if unknown:
            raise ValueError(
                f"{name}: unknown channel option(s) {', '.join(sorted(unknown))}; the "
                f"{channel_cls.__name__} channel mixer takes: "
                + ", ".join(sorted(field_names(channel_cls) - {"d_model", "layer_id", "n_layers"}))
            )
    channel_factory = (
        None
        if channel_cls is None
        else functools.partial(channel_cls, d_model=d_model, **channel_options)
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
        parallel_residual=parallel_residual,
        dropout=dropout,
        embed_norm=spec.embed_norm,
        embed_init=spec.embed_init if embed_std is None else nn.initializers.normal(embed_std),
        pos_emb=pos_emb,
        max_len=max_len,
        cls_token=cls_token,
        embed_dropout=embed_dropout,
    )
    if head == "lm":
        tie = spec.tie_embeddings if tie_embeddings is None else tie_embeddings
        return LanguageModel(backbone=backbone, tie_embeddings=tie, head_init=spec.head_init)
    head_cls = Classifier if head == "classify" else DualEncoder
    return head_cls(backbone=backbone, n_classes=n_classes, pooling=pooling, head_mlp=head_mlp)
