"""Evaluate a saved run without changing it: ``run.py eval``.

    python run.py eval --workdir runs/mqar_mamba                         # best checkpoint, val
    python run.py eval --workdir runs/mqar_mamba --checkpoint latest --split test
    python run.py eval --workdir runs/passkey_mamba --config.task.options.seq_len=2048

It reads the run's ``config.json`` and one checkpoint (``best``: the lowest validation
loss, the checkpoint LRA papers report; ``latest``; or a step number), applies the task
options given on the command line (another length, depth, data directory: length
generalisation and the passkey grid are task options), evaluates one split and writes
``eval/<name>.json``. It trains nothing and writes nothing else: the checkpoints are
opened read-only, and ``config.json`` / ``results.json`` are left as they are.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax

from experiments import checkpoint, models, parallel, rundir
from experiments import train as train_lib

SPLITS = ("val", "test")


class EvalError(ValueError):
    """The run cannot be evaluated as asked; the message says why and what to do."""


def _config(workdir: str, overrides: dict[str, Any]):
    path = os.path.join(workdir, rundir.CONFIG)
    if not os.path.exists(path):
        raise EvalError(
            f"{path} not found: --workdir must be a run directory made by `python run.py train`"
        )
    saved = rundir.read_json(path)
    bad = [k for k in overrides if not (k.startswith("task.options.") or k == "train.eval_steps")]
    if bad:
        raise EvalError(
            f"eval can change task options and train.eval_steps only (the model is the "
            f"saved one); got {', '.join(bad)}"
        )
    from experiments.config import override

    config = train_lib.resolve_config(saved)
    try:
        return override(config, overrides)
    except KeyError as error:
        raise EvalError(error.args[0]) from None


def _step(ckpts: checkpoint.Checkpoints, which: str) -> int:
    steps = ckpts.steps()
    if not steps:
        raise EvalError(f"no checkpoint in {ckpts.directory}; train the run first")
    if which == "latest" or (which == "best_or_latest" and ckpts.best_step() is None):
        return steps[-1]
    if which in ("best", "best_or_latest"):
        best = ckpts.best_step()
        if best is None:
            raise EvalError(
                f"{ckpts.directory} has no evaluated checkpoint to call best; "
                "use --checkpoint latest or a step: " + ", ".join(map(str, steps))
            )
        return best
    if not which.isdigit() or int(which) not in steps:
        raise EvalError(
            f"--checkpoint {which!r}: use best, latest or a saved step: "
            + ", ".join(map(str, steps))
        )
    return int(which)


def restore_params(workdir: str, which: str = "best"):
    """(step, params) of checkpoint ``which`` of a run, read-only: ``best``, ``latest``, a
    step, or ``best_or_latest`` (the best if any evaluation chose one)."""
    try:
        ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), keep=1, read_only=True)
    except checkpoint.CheckpointError as error:
        raise EvalError(f"{error}; train the run first") from None
    try:
        step = _step(ckpts, which)
        return step, ckpts.load(step)["params"]
    except checkpoint.CheckpointError as error:
        raise EvalError(str(error)) from None
    finally:
        ckpts.close()


def default_name(split: str, step: int, overrides: dict[str, Any]) -> str:
    extra = "".join(f"-{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(overrides.items()))
    return f"{split}-step{step}{extra}".replace(os.sep, "_")


def evaluate_run(
    workdir: str,
    *,
    which: str = "best",
    split: str = "val",
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict:
    """Evaluate checkpoint ``which`` of ``workdir`` on ``split``; returns what it wrote."""
    if split not in SPLITS:
        raise EvalError(f"--split {split!r}; valid: {', '.join(SPLITS)}")
    overrides = dict(overrides or {})
    config = _config(workdir, overrides)
    start = time.perf_counter()
    task = train_lib._make_task(config)
    spec, tc = task.spec, config.train
    model = models.build_model(config, spec)
    step, params = restore_params(workdir, which)
    mesh = parallel.make_mesh(config.mesh.data)
    eval_step = jax.jit(train_lib.make_eval_step(model, spec.kind, tc))
    n_steps = tc.eval_steps or task.eval_steps(split, tc.batch_size)
    try:
        metrics = train_lib.evaluate(
            eval_step,
            params,
            task,
            n_steps,
            tc.batch_size,
            tc.seed,
            parallel.batch_sharding(mesh),
            split,
        )
    except (ValueError, TypeError) as error:  # e.g. a learned table sized for another length
        raise EvalError(
            f"the saved parameters do not fit the model built for these task options "
            f"({' '.join(str(error).split())[:200]})"
        ) from None
    out = {
        "workdir": os.path.abspath(workdir),
        "arch": config.arch,
        "checkpoint": step,
        "split": split,
        "overrides": overrides,
        "eval_steps": n_steps,
        "metrics": metrics,
        "wall_time_s": time.perf_counter() - start,
    }
    directory = os.path.join(workdir, "eval")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, name or default_name(split, step, overrides))
    path, n = f"{stem}.json", 2
    while os.path.exists(path):  # an earlier evaluation is kept, not overwritten
        path, n = f"{stem}-{n}.json", n + 1
    rundir.write_json(path, out)
    out["path"] = path
    return out
