"""Optimizer rules declared by the modules that own the parameters.

A module states, next to its parameters, how the optimizer treats each of them, as
state-spaces/s4 does with ``register(name, tensor, lr)`` and annotated-s4 with its
``lr`` dict::

    class Mamba(nn.Module):
        # state-spaces/mamba: A_log and D are not weight-decayed (``_no_weight_decay``).
        PARAM_RULES: ClassVar = {"A_log": params.SSM, "D": params.SSM, "dt_bias": params.SSM}

(or a ``param_rules(self)`` method, when the rules depend on the module's fields).
``param_rules(model, *example_inputs)`` traces ``model.init`` once, records every
module that was actually built (with its path) and returns a pytree like the
parameters with a ``ParamRule`` at each leaf. So a cell defined in a notebook brings
its own rules; nothing is matched by name across classes. Flax's own layers get the
usual rule (no weight decay on biases, norm scales and embeddings), from
``FLAX_RULES`` below; a parameter nobody declares trains at the base rate with weight
decay (``DEFAULT``).

Configs refine the declared rules for ablations, big_vision style: ``train.lr_mults``
and ``train.wd_mults`` are lists of ``(regex, multiplier)``; the first regex that
matches a parameter's path (``backbone/blocks_0/mixer/A_log``) multiplies its rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
from flax import linen as nn

BASES = ("lr", "ssm_lr")  # the config.train fields a rule's learning rate starts from


class ParamRule(NamedTuple):
    """How one parameter is optimised.

    ``base``: ``"lr"`` (``train.lr``, decayed by ``train.weight_decay``) or ``"ssm_lr"``
    (``train.ssm_lr``, decayed by ``train.ssm_weight_decay``: the separate rate that
    state-spaces/s4 and S5 give their A, B and dt). ``lr_mult`` multiplies that rate and
    ``wd_mult`` that weight decay (0: none). ``wd_base`` takes the weight decay from the
    other base (``"lr"``: ``train.weight_decay``), for a parameter at the SSM rate that
    is still decayed like the model (state-spaces/s4's C on its image tasks).
    """

    base: str = "lr"
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    wd_base: str | None = None  # None: the same as ``base``

    @property
    def key(self) -> str:
        """A string naming the rule (optax labels must be strings, not tuples)."""
        wd_base = "" if self.wd_base in (None, self.base) else f"({self.wd_base})"
        return f"{self.base}*{self.lr_mult:g}/wd{wd_base}*{self.wd_mult:g}"


DEFAULT = ParamRule()
NO_DECAY = ParamRule(wd_mult=0.0)  # norms, biases, embeddings, positions
SSM = ParamRule(base="ssm_lr")  # state-space / decay parameters

# Flax layers that this project does not define: the usual no-decay convention.
FLAX_RULES: dict[type[nn.Module], dict[str, ParamRule]] = {
    nn.Dense: {"bias": NO_DECAY},
    nn.Conv: {"bias": NO_DECAY},
    nn.Embed: {"embedding": NO_DECAY},
    nn.LayerNorm: {"scale": NO_DECAY, "bias": NO_DECAY},
    nn.RMSNorm: {"scale": NO_DECAY},
    nn.GroupNorm: {"scale": NO_DECAY, "bias": NO_DECAY},
}


def declared_rules(module: nn.Module) -> dict[str, ParamRule]:
    """The rules ``module`` declares for its own (direct) parameters."""
    method = getattr(module, "param_rules", None)
    if callable(method):
        rules = method()
    else:
        rules = getattr(module, "PARAM_RULES", None)
        if rules is None:
            rules = next((r for t, r in FLAX_RULES.items() if isinstance(module, t)), {})
            # Only the parameters the layer has (Dense(use_bias=False) has no bias).
            rules = {k: r for k, r in rules.items() if getattr(module, f"use_{k}", True)}
    for name, rule in rules.items():
        if (
            not isinstance(rule, ParamRule)
            or rule.base not in BASES
            or rule.wd_base not in (None, *BASES)
        ):
            raise TypeError(
                f"{type(module).__name__}: the rule for {name!r} must be an "
                f"arch.params.ParamRule with base in {BASES}, got {rule!r}"
            )
    return dict(rules)


def module_rules(model: nn.Module, *example_inputs, **kwargs):
    """``({module path: its declared rules}, parameter shapes)`` for every module that
    ``model.init`` builds. Traced with ``jax.eval_shape``: nothing is computed.
    """
    found: dict[tuple[str, ...], dict[str, ParamRule]] = {}

    def record(next_fun, args, kw, context):
        module = context.module
        if module.path not in found and context.method_name != "param_rules":
            found[module.path] = {}  # first: param_rules() is itself an intercepted method
            found[module.path] = declared_rules(module)
        return next_fun(*args, **kw)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs, **kwargs))
    return found, shapes["params"]


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)


def path_string(path) -> str:
    """``backbone/blocks_0/mixer/A_log``: the string ``lr_mults`` regexes match."""
    return "/".join(_path_names(path))


def _first_match(patterns: Sequence[tuple[str, float]], name: str) -> float:
    for pattern, mult in patterns:
        if re.fullmatch(pattern, name):
            return float(mult)
    return 1.0


def check_mults(patterns, field: str) -> list[tuple[str, float]]:
    """Validate a ``train.lr_mults`` / ``train.wd_mults`` list; returns it as pairs."""
    out = []
    for entry in patterns or ():
        try:
            pattern, mult = entry
            re.compile(pattern)
            mult = float(mult)
        except (TypeError, ValueError, re.error) as error:
            raise ValueError(
                f"train.{field}: each entry must be (regex, multiplier), e.g. "
                f"('.*/mixer/A_log', 0.1); got {entry!r} ({error})"
            ) from None
        out.append((pattern, mult))
    return out


def rules_for_params(
    params: Any,
    rules_by_module: dict[tuple[str, ...], dict[str, ParamRule]],
    *,
    lr_mults: Sequence[tuple[str, float]] = (),
    wd_mults: Sequence[tuple[str, float]] = (),
) -> Any:
    """A pytree like ``params`` (the inner ``"params"`` dict) with a rule per leaf."""

    def rule(path, _):
        names = _path_names(path)
        declared = rules_by_module.get(names[:-1], {}).get(names[-1], DEFAULT)
        name = "/".join(names)
        return declared._replace(
            lr_mult=declared.lr_mult * _first_match(lr_mults, name),
            wd_mult=declared.wd_mult * _first_match(wd_mults, name),
        )

    return jax.tree_util.tree_map_with_path(rule, params)


def param_rules(model: nn.Module, *example_inputs, lr_mults=(), wd_mults=(), **kwargs) -> Any:
    """Rules for every parameter of ``model`` (a pytree like ``init(...)["params"]``).

    ``example_inputs``: what ``model.init`` takes besides the key (shapes only matter).
    """
    rules, shapes = module_rules(model, *example_inputs, **kwargs)
    return rules_for_params(
        shapes,
        rules,
        lr_mults=check_mults(lr_mults, "lr_mults"),
        wd_mults=check_mults(wd_mults, "wd_mults"),
    )
