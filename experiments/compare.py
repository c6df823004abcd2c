"""Train several architectures on one task with one config; print and plot the table.

This is ``python run.py`` (no arguments): every family on a small MQAR, on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from experiments import plots, tables
from experiments.train import train

COLUMNS = (
    "arch",
    "lr",
    "params",
    "state_per_layer",
    "accuracy",
    "loss",
    "steps_per_s",
    "wall_s",
)


def caption(config) -> str:
    """What the table's columns measured, printed under it."""
    return (
        f"{config.task.name}, {config.train.steps} steps of batch {config.train.batch_size}: "
        "accuracy and loss on the validation split after the last step; lr is each "
        "arch's peak learning rate; state_per_layer is the recurrent state one sequence "
        "carries per layer in floats (attention: its KV cache at the task's length)."
    )


def row(arch: str, results: dict) -> dict:
    final = results.get("final") or {}
    return {
        "arch": arch,
        "lr": ((results.get("config") or {}).get("train") or {}).get("lr"),
        "params": results.get("params"),
        # floats one sequence carries per layer (the KV cache at max_len for attention)
        "state_per_layer": (results.get("state") or {}).get("per_layer"),
        "accuracy": final.get("eval_accuracy"),
        "loss": final.get("eval_loss"),
        "steps_per_s": results.get("steps_per_s"),
        "wall_s": results.get("wall_time_s"),
    }


def compare(config, archs: Sequence[str], workdir: str) -> list[dict]:
    """Train ``config`` once per arch (``workdir/<arch>``); write table and plots.

    ``config`` is one config (its ``arch`` replaced by each name) or a function
    ``name -> config`` (each architecture with its own recipe, e.g. the LRA configs).
    A finished run is read back from its ``results.json`` and an interrupted one resumes,
    so re-running a comparison reproduces its table and trains only what is missing.
    """
    import arch as arch_lib  # the registry imports every mixer

    unknown = [a for a in archs if a not in arch_lib.ARCHS]
    if unknown:
        raise ValueError(
            f"unknown architecture(s) {', '.join(unknown)}; valid: "
            + ", ".join(sorted(arch_lib.ARCHS))
        )
    rows, runs = [], {}
    for name in archs:
        if callable(config):
            cfg = config(name)
        else:
            cfg = config.copy_and_resolve_references()
            cfg.arch = name
        run_dir = os.path.join(workdir, name)
        print(f"== {name}: training in {run_dir}", flush=True)
        rows.append(row(name, train(cfg, run_dir)))
        runs[name] = run_dir
    os.makedirs(workdir, exist_ok=True)
    text = tables.markdown(rows, COLUMNS) + "\n\n" + caption(cfg)
    with open(os.path.join(workdir, "comparison.md"), "w") as f:
        f.write(text + "\n")
    tables.write_csv(rows, COLUMNS, os.path.join(workdir, "comparison.csv"))
    plots.learning_curves(runs, os.path.join(workdir, "learning_curves.png"))
    plots.bars(
        [r["arch"] for r in rows],
        [r["accuracy"] or 0.0 for r in rows],
        "eval accuracy",
        os.path.join(workdir, "accuracy.png"),
        title=f"{cfg.task.name}: accuracy after {cfg.train.steps} steps",
    )
    return rows
