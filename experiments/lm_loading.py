"""A language model, its parameters and its tokenizer from one spec: ``load_lm(spec)``.

``spec`` is either

- a run directory of this project (``config.json`` and ``checkpoints/``, written by
  ``python run.py train`` on a language-modelling task): the model is rebuilt from the
  saved config as ``run.py eval`` does, and its best checkpoint (the lowest validation
  loss; the latest if none was evaluated) restored. The tokenizer is the one the task
  options name (``task.options.tokenizer``), else the one the lm task's data were
  prepared with (its ``meta.json``), else bytes;
- anything else (a converted or Hugging Face checkpoint directory, a ``.pth``):
  ``arch.convert.load_pretrained(spec)``, whose tokenizer is the directory's
  tokenizer.json.

``tokenizer`` (a spec for ``experiments.tokenizer.load_tokenizer``) overrides either.
"""

from __future__ import annotations

import os
from typing import Any

from experiments import models, rundir
from experiments.tokenizer import Tokenizer, load_tokenizer


class LoadError(ValueError):
    """``spec`` names no language model that can be loaded; the message says why."""


def is_run_dir(path: str) -> bool:
    """A directory with this project's ``config.json`` (a Hugging Face checkpoint has a
    config.json too, without ``task`` and ``train``)."""
    config = os.path.join(path, rundir.CONFIG)
    if not os.path.isfile(config):
        return False
    try:
        saved = rundir.read_json(config)
    except ValueError:  # not JSON: not ours
        return False
    return isinstance(saved, dict) and {"task", "train"} <= set(saved)


def load_lm(spec: str, tokenizer: str | None = None) -> tuple[Any, Any, Tokenizer]:
    """(model, params, tokenizer) of a run directory or of pretrained weights (module doc)."""
    spec = os.fspath(spec)
    if not os.path.exists(spec):
        raise LoadError(
            f"{spec}: no such file or directory; give a run directory (config.json and "
            "checkpoints/) or pretrained weights (a checkpoint directory or a .pth)"
        )
    if is_run_dir(spec):
        model, params, recorded = _load_run(spec)
    else:
        model, params, recorded = _load_pretrained(spec)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else _tokenizer(recorded, spec)
    _check_vocab(model, tok, spec)
    return model, params, tok


def _load_run(workdir: str) -> tuple[Any, Any, str]:
    from experiments import train as train_lib  # deferred: imports the training loop

    try:
        config = train_lib.resolve_config(rundir.read_json(os.path.join(workdir, rundir.CONFIG)))
        task = train_lib._make_task(config)
    except (ValueError, OSError) as error:  # TrainingError, RunDirError: ValueErrors
        raise LoadError(
            f"{workdir}: cannot rebuild the run's task ({_first_line(error)})"
        ) from None
    if task.spec.kind != "lm" or task.spec.vocab_size is None:
        raise LoadError(
            f"{workdir}: task {task.spec.name!r} trains a {task.spec.kind!r} model; "
            "generation and lm-eval need a language model over a vocabulary"
        )
    try:
        model = models.build_model(config, task.spec)
    except ValueError as error:
        raise LoadError(f"{workdir}: cannot rebuild the model ({_first_line(error)})") from None
    from experiments.evaluation import restore_params

    try:
        _, params = restore_params(workdir, "best_or_latest")
    except ValueError as error:  # EvalError
        raise LoadError(str(error)) from None
    params = {"params": params}
    return model, params, _run_tokenizer(config, task)


def _run_tokenizer(config, task) -> str:
    """The task's ``tokenizer`` option, else the one its data were prepared with (the lm
    task's meta.json), else bytes."""
    option = config.task.options.get("tokenizer")
    if option:
        return option
    try:
        return task.meta["request"]["tokenizer"]["spec"]
    except (AttributeError, KeyError, TypeError):
        return "byte"


def _load_pretrained(spec: str) -> tuple[Any, Any, str | None]:
    from arch.convert import load_pretrained  # deferred: torch, transformers

    try:
        model, params, tokenizer_file = load_pretrained(spec)
    except (ValueError, OSError, KeyError) as error:
        raise LoadError(
            f"{spec}: neither a run directory (config.json and checkpoints/) nor weights "
            f"that arch.convert reads ({_first_line(error)})"
        ) from None
    return model, params, tokenizer_file


def _tokenizer(recorded: str | None, spec: str) -> Tokenizer:
    """The tokenizer the run or the pretrained directory came with (a spec or a file)."""
    if recorded is None:
        raise LoadError(
            f"{spec} comes with no tokenizer.json; pass --tokenizer / tokenizer= (a "
            "tokenizer.json, or 'byte' for a byte-level model)"
        )
    return load_tokenizer(os.fspath(recorded))


def _check_vocab(model, tokenizer: Tokenizer, spec: str) -> None:
    vocab = model.backbone.vocab_size
    if tokenizer.vocab_size > vocab:
        raise LoadError(
            f"{spec}: tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model "
            f"only {vocab}; pass the tokenizer the model was trained with"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
