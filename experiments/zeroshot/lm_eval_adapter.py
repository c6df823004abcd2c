"""Our language models inside lm-evaluation-harness 0.4.x, as the model "subquadratic".

    python -m experiments.zeroshot.lm_eval_adapter --model_args pretrained=runs/lm_mamba \\
        --tasks lambada_openai,hellaswag --batch_size 16 --output_path runs/lm_eval

runs lm-eval's own command line (every ``lm-eval run`` flag works: ``--include_path``,
``--limit``, ``--log_samples``...) after importing this module, which registers the model;
``--model subquadratic`` is added when absent. From Python, import this module and pass
``model="subquadratic"`` or ``SubquadraticLM.from_model(model, params, tokenizer)`` to
``lm_eval.simple_evaluate``. Registration happens only when this module is imported.

model_args: ``pretrained`` (a run directory or pretrained weights: ``experiments.lm_loading``),
``tokenizer`` (overrides the one that comes with them), ``batch_size``.

- ``loglikelihood``: ``experiments.zeroshot.scoring`` (the same numbers as our native
  scorer by construction: lm-eval's context/continuation split, end-of-text before an
  empty context, inputs cut to the model's last ``max_len`` tokens).
- ``loglikelihood_rolling``: lm-eval's disjoint rolling windows of ``max_len`` tokens, the
  first predicted after the end-of-text token (``get_rolling_token_windows`` with
  ``context_len=1``, as its Hugging Face model does).
- ``generate_until``: ``experiments.generate``, one request at a time; greedy unless
  ``do_sample`` (lm-eval's ``normalize_gen_kwargs``), honouring ``until``,
  ``max_gen_toks``, ``temperature``, ``top_k``, ``top_p`` and stopping at end of text. A
  model with a bounded context keeps the prompt's last tokens so that ``max_gen_toks``
  fit (one token more than lm-eval's Hugging Face model keeps: see
  ``generate.generate_text``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from tqdm import tqdm

from experiments import generate as gen_lib
from experiments.zeroshot import scoring

log = logging.getLogger(__name__)

NAME = "subquadratic"
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
# gen_kwargs that generate_until reads; others are reported once and ignored.
GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed"}


def _batch_size(value) -> int:
    """lm-eval passes an int, a numeric string or "auto" (auto: our default)."""
    if value in (None, "auto") or str(value).startswith("auto:"):
        return DEFAULT_BATCH_SIZE
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size={value!r} must be a positive integer or 'auto'")
    return size


class SubquadraticLM(LM):
    """A model of this project (model, params, tokenizer) as an lm-eval ``LM``."""

    def __init__(
        self,
        pretrained: str | None = None,
        tokenizer: str | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
        max_batch_size: int | None = None,
        device: str | None = None,
        *,
        loaded: tuple[Any, Any, Any] | None = None,
    ) -> None:
        super().__init__()
        if loaded is None:
            if pretrained is None:
                raise ValueError(
                    "model_args needs pretrained=<run directory or weights>, e.g. "
                    "--model_args pretrained=runs/lm_mamba"
                )
            from experiments.lm_loading import load_lm  # deferred: the training stack

            loaded = load_lm(pretrained, tokenizer)
        self.model, self.params, self.tok = loaded
        self.rows = scoring.RowScorer(self.model, self.params)  # compiled shapes kept
        self.batch_size = _batch_size(batch_size)
        # lm-eval passes these for torch backends; JAX places the arrays itself.
        del max_batch_size
        if device is not None:
            log.warning("subquadratic: ignoring device=%s (JAX picks its devices)", device)
        self._warned_gen_kwargs: set[str] = set()

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """lm-eval's constructor path; ``model_args`` win over the command line's own
        ``--batch_size`` (which lm-eval always passes, 1 by default)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        args = lm_utils.simple_parse_args_string(arg_string)
        return cls.create_from_arg_obj(args, additional_config)

    @classmethod
    def from_model(cls, model, params, tokenizer, *, batch_size: int = DEFAULT_BATCH_SIZE):
        """Wrap a model already in memory (notebooks, tests)."""
        return cls(loaded=(model, params, tokenizer), batch_size=batch_size)

    @property
    def max_length(self) -> int:
        """The longest input scored at once (the scorer's cut, the rolling window)."""
        return int(self.model.backbone.max_len)

    @property
    def eot_token_id(self) -> int | None:
        return self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return str(self.tok.name)

    def get_model_info(self) -> dict:
        return {"model_class": type(self.model).__name__, "tokenizer": self.tokenizer_name}

    # --- log-likelihoods --------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            pairs.append(scoring.encode_pair(self.tok, context, continuation))
        results = self._score(pairs, disable_tqdm, "loglikelihood")
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        if self.tok.eos_id is None:
            raise ValueError(
                f"loglikelihood_rolling predicts a text's first token after the end-of-text "
                f"token, and tokenizer {self.tokenizer_name!r} has none; use a tokenizer.json "
                "with <|endoftext|>"
            )
        owners, pairs = [], []
        for index, request in enumerate(requests):
            for window in rolling_windows(
                self.tok.encode(request.args[0]), self.tok.eos_id, self.max_length
            ):
                owners.append(index)
                pairs.append(window)
        totals = [0.0] * len(requests)
        for owner, (logp, _) in zip(
            owners, self._score(pairs, disable_tqdm, "rolling"), strict=True
        ):
            totals[owner] += logp
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def _score(self, pairs, disable_tqdm: bool, what: str) -> list[tuple[float, bool]]:
        """The row scorer over ``pairs``, longest first (less padding per batch),
        returned in the order given."""
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[Any] = [None] * len(pairs)
        for start in tqdm(
            range(0, len(order), self.batch_size), desc=f"subquadratic {what}", disable=disable_tqdm
        ):
            chunk = order[start : start + self.batch_size]
            scored = self.rows.score([pairs[i] for i in chunk], batch_size=self.batch_size)
            for i, result in zip(chunk, scored, strict=True):
                results[i] = result
        return results

    # --- generation -------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in tqdm(requests, desc="subquadratic generate_until", disable=disable_tqdm):
            context, gen_kwargs = request.args
            text = self._generate(context, gen_kwargs)
            self.cache_hook.add_partial("generate_until", request.args, text)
            out.append(text)
        return out

    def _generate(self, context: str, gen_kwargs: dict) -> str:
        kwargs = normalize_gen_kwargs(dict(gen_kwargs or {}), DEFAULT_MAX_GEN_TOKS)
        unread = set(kwargs) - GEN_KWARGS - self._warned_gen_kwargs
        if unread:
            log.warning("subquadratic: generate_until ignores gen_kwargs %s", sorted(unread))
            self._warned_gen_kwargs |= unread
        sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0.0)) > 0.0
        text, _ = gen_lib.generate_text(
            self.model,
            self.params,
            self.tok,
            context,
            max_new_tokens=int(kwargs["max_gen_toks"]),
            stop_strings=[s for s in kwargs["until"] if s],
            truncate_prompt=True,
            prefill_in_pieces=True,  # hundreds of prompt lengths: few shapes to compile
            temperature=float(kwargs["temperature"]) if sample else 0.0,
            top_k=kwargs.get("top_k") if sample else None,
            top_p=kwargs.get("top_p") if sample else None,
            seed=int(kwargs.get("seed") or 0),
        )
        return text


# Registered by the importable module only: under ``python -m`` this file also runs as
# ``__main__``, and a second class under the same name is an error in lm-eval's registry.
if __name__ != "__main__":
    register_model(NAME)(SubquadraticLM)


def rolling_windows(
    tokens: Sequence[int], prefix_id: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(context ids, predicted ids) windows that predict every token once, each with as
    much context as fits ``max_length`` (lm-eval's rolling loglikelihood)."""
    windows = lm_utils.get_rolling_token_windows(
        token_list=list(tokens), prefix_token=prefix_id, max_seq_len=max_length, context_len=1
    )
    return [lm_utils.make_disjoint_window(w) for w in windows]


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line with this model registered (``--model subquadratic`` added
    when no ``--model`` is given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and not args[0].startswith("-") else "run"
    has_model = any(a in ("--model", "-M") or a.startswith("--model=") for a in args)
    if command == "run" and not has_model:
        args += ["--model", NAME]
    from lm_eval.__main__ import cli_evaluate

    from experiments.lm_loading import LoadError

    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except (LoadError, ValueError, FileNotFoundError) as error:  # one line, as run.py
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from experiments.zeroshot.lm_eval_adapter import main as _main  # registers the model

    _main()
