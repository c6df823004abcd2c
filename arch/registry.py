"""The explicit registry of architectures and ``register`` (``build``: arch/factory.py).

``ARCHS`` maps a name to an ``ArchSpec``: everything per-architecture lives there (the
sequence mixer class and its default options, the block layout the published
architecture uses, whether it is in the default comparison and benchmarks, and its
training-recipe defaults per task family). Every other list of architectures in the
project is derived from ``ARCHS``. A new cell, in ``arch/`` or in a notebook, is one
``register(name, ArchSpec(MyMixer, ...))`` call; the configs, ``train``, ``compare``,
``bench`` and the protocol tests then find it by name.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flax import linen as nn

from arch import lra_recipes
from arch.channel import GLU, MLP
from arch.mixers import rwkv
from arch.mixers.aft import AFTConv, AFTFull, AFTLocal, AFTSimple
from arch.mixers.attention import Attention
from arch.mixers.mamba import Mamba
from arch.mixers.mamba2 import Mamba2
from arch.mixers.rglru import RGLRUBlock
from arch.mixers.rwkv import RWKVChannelMix, RWKVTimeMix
from arch.mixers.rwkv6 import RWKV6TimeMix
from arch.mixers.s4 import S4
from arch.mixers.s4d import S4D
from arch.mixers.s5 import S5
from arch.moe import MoE

CHANNEL_MIXERS: dict[str, type[nn.Module] | None] = {
    "mlp": MLP,
    "glu": GLU,
    "rwkv": RWKVChannelMix,
    "moe": MoE,
    "none": None,
}
NORMS = ("layer", "rms")


class _FromTask:
    """A recipe value meaning: the task table's value (the published S4 hyperparameter)."""

    def __repr__(self) -> str:
        return "FROM_TASK"


FROM_TASK = _FromTask()

# The fields a recipe of each task family may set; the required ones must be set.
RECIPE_FIELDS: dict[str, dict[str, bool]] = {
    # configs/lra/common.py: lr and weight_decay are required; epochs ({task: n}), model
    # (mixer options), published (the row of experiments/lra_table.PUBLISHED that
    # `run.py table lra` prints beside ours) and tasks (per task, a whole recipe of its
    # own: {task: {"model": ..., "train": ..., "task": ...}}, set last) are optional.
    "lra": {
        "lr": True,
        "weight_decay": True,
        "epochs": False,
        "model": False,
        "published": False,
        "tasks": False,
    },
}


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One architecture: a sequence mixer in a block layout, plus its recipe defaults.

    - ``mixer``: a Flax module following the mixer protocol (``arch/protocol.py``). It
      has a bidirectional form iff it has a ``causal`` field.
    - ``channel``: the channel mixer of each block (a key of ``CHANNEL_MIXERS``);
      ``norm``, ``prenorm``, ``embed_norm``, ``tie_embeddings``: the block layout;
      ``embed_init``, ``head_init``: the token embedding's and LM head's initialisers,
      when the architecture's official code has its own (RWKV).
    - ``mixer_defaults``: options passed to the mixer unless the caller overrides them;
      ``channel_defaults`` the same for the channel mixer (Hawk's GeGLU).
    - ``recipes``: per task family (``"lra"``), the training defaults its configs use;
      see ``RECIPE_FIELDS``. A config of a family the spec has no recipe for stops with
      a message naming the field to set.
    - ``in_compare`` / ``in_bench``: part of the default ``run.py compare`` (one per
      family) and of the default ``run.py bench train|generate``.
    """

    mixer: type[nn.Module]
    channel: str = "mlp"
    norm: str = "layer"
    prenorm: bool = True
    embed_norm: bool = False
    tie_embeddings: bool = False
    embed_init: Callable | None = None  # None: N(0, 0.02)
    head_init: Callable | None = None  # None: Flax's Dense default (LeCun normal)
    mixer_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    channel_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    recipes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    in_compare: bool = True
    in_bench: bool = True
    doc: str = ""

    @property
    def bidirectional_ok(self) -> bool:
        return "causal" in field_names(self.mixer)

    def validate(self, name: str) -> None:
        """Catch a malformed spec at ``register`` time rather than at the first build."""
        if not (isinstance(self.mixer, type) and issubclass(self.mixer, nn.Module)):
            raise TypeError(f"ArchSpec {name!r}: mixer must be a flax.linen Module class")
        missing = {"__call__", "init_state", "step", "prefill"} - set(dir(self.mixer))
        if missing:
            raise TypeError(
                f"ArchSpec {name!r}: {self.mixer.__name__} lacks {', '.join(sorted(missing))} "
                "of the mixer protocol (arch/protocol.py)"
            )
        lacking = {"d_model", "layer_id", "n_layers"} - field_names(self.mixer)
        if lacking:
            raise TypeError(
                f"ArchSpec {name!r}: {self.mixer.__name__} needs the fields "
                f"{', '.join(sorted(lacking))} (d_model: int; layer_id: int = 0; "
                "n_layers: int = 1), which every block passes to its mixer"
            )
        shadowed = field_names(self.mixer) & {"init", "apply", "setup", "bind", "param"}
        if shadowed:
            raise TypeError(
                f"ArchSpec {name!r}: {self.mixer.__name__} has a field named "
                f"{', '.join(sorted(shadowed))}, which hides flax's Module method of that "
                "name; rename the field (e.g. weight_init)"
            )
        if (
            self.bidirectional_ok
            and "mask" not in inspect.signature(self.mixer.__call__).parameters
        ):
            raise TypeError(
                f"ArchSpec {name!r}: {self.mixer.__name__} has a bidirectional form (a causal "
                "field), so its __call__ must take mask=None (arch/protocol.py, Padding)"
            )
        if self.channel not in CHANNEL_MIXERS:
            raise unknown_error(f"channel mixer of {name!r}", self.channel, CHANNEL_MIXERS)
        if self.norm not in NORMS:
            raise unknown_error(f"norm of {name!r}", self.norm, NORMS)
        for family, recipe in self.recipes.items():
            if family not in RECIPE_FIELDS:
                raise unknown_error(f"recipe family of {name!r}", family, RECIPE_FIELDS)
            unknown = set(recipe) - set(RECIPE_FIELDS[family])
            if unknown:
                raise unknown_error(
                    f"{family} recipe field of {name!r}", min(unknown), RECIPE_FIELDS[family]
                )

    def recipe(self, name: str, family: str) -> dict[str, Any]:
        """The ``family`` recipe, with every required field present (else a clear error)."""
        fields = RECIPE_FIELDS[family]
        recipe = self.recipes.get(family)
        example = ", ".join(f"{f!r}: ..." for f, required in fields.items() if required)
        if recipe is None:
            raise ValueError(
                f"architecture {name!r} has no {family!r} recipe: register it with "
                f"ArchSpec(..., recipes={{{family!r}: {{{example}}}}})"
            )
        for field, required in fields.items():
            if required and field not in recipe:
                raise ValueError(
                    f"the {family!r} recipe of {name!r} has no {field!r}: set "
                    f"ArchSpec(..., recipes={{{family!r}: {{{field!r}: ..., ...}}}})"
                )
        return dict(recipe)


# LRA recipes (docs/fidelity.md has every field beside the official value). S4 and S4D:
# state-spaces/s4 configs/experiment/lra/s4-*.yaml, per task (the task table in
# configs/lra/common.py). RWKV: lr 4e-3 of the public RWKV LRA fork (ListOps, 50 epochs;
# the other tasks reuse its lr on the S4 layout, our choice). Transformer: the LRA
# paper's own recipe per task (arch/lra_recipes.py). AFT: the S4 layout with AdamW at
# lr 5e-4 / decay 0.01 (ours: no official code). Mamba: no published LRA recipe; the S4
# layout with d_state 16 and lr 2e-3 (our choice).
# S4 layer options read from the task table per task (configs/lra/common.py TASKS).
_LRA_S4_MODEL = dict.fromkeys(("d_state", "prenorm", "n_ssm", "dt_lr", "c_lr", "dt_min"), FROM_TASK)
_LRA_S4 = {"lr": FROM_TASK, "weight_decay": FROM_TASK, "model": _LRA_S4_MODEL}
_LRA_AFT = {"lr": 5e-4, "weight_decay": 0.01}

ARCHS: dict[str, ArchSpec] = {
    "transformer": ArchSpec(
        Attention,
        channel="mlp",
        recipes={
            "lra": {
                "lr": 0.05,
                "weight_decay": 0.1,
                "tasks": lra_recipes.TRANSFORMER,
                "published": "Transformer",
            }
        },
        doc="multi-head softmax attention, RoPE",
    ),
    "aft_full": ArchSpec(
        AFTFull,
        recipes={"lra": _LRA_AFT},
        in_compare=False,
        in_bench=False,  # a dense [max_len, max_len] bias per layer (or pos_bias_rank=k)
        doc="AFT-full: learned pairwise position bias, O(T^2)",
    ),
    "aft_local": ArchSpec(
        AFTLocal,
        recipes={"lra": _LRA_AFT},
        in_compare=False,
        in_bench=False,  # the same dense bias as AFT-full
        doc="AFT-local: position bias within a window",
    ),
    "aft_simple": ArchSpec(
        AFTSimple, recipes={"lra": _LRA_AFT}, doc="AFT-simple: no position bias"
    ),
    "aft_conv": ArchSpec(
        AFTConv,
        recipes={"lra": _LRA_AFT},
        in_compare=False,
        in_bench=False,  # its parallel form is O(T^2) here (see kernels/aft.py)
        doc="AFT-conv: per-head depthwise convolution bias",
    ),
    "rwkv": ArchSpec(
        RWKVTimeMix,
        channel="rwkv",
        embed_norm=True,
        embed_init=rwkv.small_embedding(),
        head_init=rwkv.head_init,
        recipes={
            "lra": {
                "lr": 4e-3,
                "weight_decay": FROM_TASK,
                "epochs": {"listops": 50},
                "published": "RWKV",
            }
        },
        doc="RWKV-4: TimeMix (WKV) + ChannelMix",
    ),
    "rwkv6": ArchSpec(
        RWKV6TimeMix,
        channel="rwkv",
        channel_defaults={"version": 6},
        embed_norm=True,
        embed_init=rwkv.small_embedding(),
        head_init=rwkv.head_init,
        # No published LRA recipe for RWKV-6: RWKV-4's (ours).
        recipes={"lra": {"lr": 4e-3, "weight_decay": FROM_TASK}},
        in_compare=False,  # RWKV-4 represents the family in the default comparison
        doc="RWKV-6 (Finch): data-dependent token shift and decay, matrix-valued state",
    ),
    "s4": ArchSpec(
        S4,
        channel="none",
        recipes={"lra": {**_LRA_S4, "published": "S4 (latest)"}},
        in_compare=False,  # S4D represents the S4 family in the default comparison
        doc="S4: DPLR (HiPPO-LegS NPLR) state space layer",
    ),
    "s4d": ArchSpec(
        S4D,
        channel="none",
        # The published row is S4D-LegS, so the LRA recipe uses that init (the layer's own
        # default is the official S4D-Lin).
        recipes={
            "lra": {
                **_LRA_S4,
                "model": {**_LRA_S4_MODEL, "init_scheme": "legs"},
                "published": "S4D-LegS",
            }
        },
        doc="S4D: diagonal state space layer",
    ),
    "s5": ArchSpec(
        S5,
        channel="none",
        recipes={
            "lra": {
                "lr": 3e-3,
                "weight_decay": 0.04,
                "tasks": lra_recipes.S5,
                "published": "S5",
            }
        },
        in_compare=False,  # S4D represents the diagonal SSMs in the default comparison
        doc="S5: one MIMO diagonal SSM, associative scan",
    ),
    "mamba": ArchSpec(
        Mamba,
        channel="none",
        norm="rms",
        tie_embeddings=True,
        recipes={"lra": {"lr": 2e-3, "weight_decay": FROM_TASK, "model": {"d_state": 16}}},
        doc="Mamba: selective state space (S6) block",
    ),
    "mamba2": ArchSpec(
        Mamba2,
        channel="none",
        norm="rms",
        tie_embeddings=True,
        # No published LRA recipe: Mamba's choice (ours).
        recipes={"lra": {"lr": 2e-3, "weight_decay": FROM_TASK, "model": {"d_state": 16}}},
        in_compare=False,  # Mamba represents the selective SSMs in the default comparison
        doc="Mamba-2: SSD block (scalar A per head, chunked matrix form)",
    ),
    # MoE-Mamba (Pioro et al. 2024): Mamba layers interleaved with Switch-style MoE
    # feed-forwards (top-1 routing); 8 experts at this scale (ours).
    "moe_mamba": ArchSpec(
        Mamba,
        channel="moe",
        channel_defaults={"n_experts": 8, "top_k": 1},
        norm="rms",
        tie_embeddings=True,
        recipes={"lra": {"lr": 2e-3, "weight_decay": FROM_TASK, "model": {"d_state": 16}}},
        in_compare=False,
        doc="MoE-Mamba: Mamba + mixture-of-experts feed-forward (Switch routing)",
    ),
    # Hawk (De et al. 2024): RG-LRU recurrent blocks with Griffin's residual layout
    # (RMSNorm, pre-norm) and MLP block (GeGLU, expansion 3). No LRA recipe was
    # published; Mamba's S4-layout choice (lr 2e-3), ours.
    "hawk": ArchSpec(
        RGLRUBlock,
        channel="glu",
        channel_defaults={"activation": "gelu", "hidden_ratio": 3.0},
        norm="rms",
        recipes={"lra": {"lr": 2e-3, "weight_decay": FROM_TASK}},
        doc="Hawk: RG-LRU recurrent block (Griffin)",
    ),
}


def register(name: str, spec: ArchSpec, *, replace: bool = False) -> ArchSpec:
    """Add ``spec`` to ``ARCHS`` under ``name`` (e.g. a cell defined in a notebook).

    Re-registering a name is an error unless ``replace=True`` (re-running a notebook
    cell that redefines the class).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"architecture name must be an identifier-like string, got {name!r}")
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"register({name!r}, spec): spec must be an arch.ArchSpec, got {spec!r}")
    if name in ARCHS and not replace:
        raise ValueError(
            f"architecture {name!r} is already registered; pass replace=True to redefine it"
        )
    spec.validate(name)
    ARCHS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove ``name`` (tests and notebooks that clean up after themselves)."""
    get(name)
    del ARCHS[name]


def get(name: str) -> ArchSpec:
    """The spec of ``name``; an unknown name is an error listing the registered ones."""
    if name not in ARCHS:
        raise unknown_error("architecture", name, ARCHS)
    return ARCHS[name]


def names(*, compare: bool = False, bench: bool = False) -> list[str]:
    """Registered names, in registration order; optionally only the default ones."""
    return [
        n for n, s in ARCHS.items() if (not compare or s.in_compare) and (not bench or s.in_bench)
    ]


def unknown_error(what: str, name: str, valid) -> ValueError:
    return ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(valid))}")


def field_names(module_cls: type[nn.Module]) -> set[str]:
    return {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}
