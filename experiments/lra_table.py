"""The LRA table: our runs' accuracies beside the published ones, with the difference.

    python run.py table lra runs/lra        # reads runs/lra/**/results.json

A run counts for (arch, task) from its own ``results.json`` (``config.arch``,
``config.task.name``); its score is the test accuracy at the run's best checkpoint, the
evaluation with the lowest validation loss (``results["best"]``), which is what LRA papers
report. A run made with ``train.test_at_best=False`` has no test number: its validation
accuracy counts instead and the row's source says so. Where several runs share
(arch, task), the one with the best validation accuracy counts (never chosen on test;
Text is the exception LRA made: its validation split is its test split).
"""

from __future__ import annotations

import glob
import json
import os

from experiments import tables

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
HEADERS = ("ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X")

# Published accuracies (%), each from the paper named beside it. None = "fail" (chance).
PUBLISHED: dict[str, tuple[tuple[float | None, ...], str]] = {
    "Transformer": ((36.37, 64.27, 57.46, 42.44, 71.40, None), "LRA paper (Tay et al. 2021)"),
    "S4 (v1)": ((58.35, 76.02, 87.09, 87.26, 86.05, 88.10), "S4 paper, arXiv 2111.00396"),
    "S4 (latest)": ((59.60, 86.82, 90.90, 88.65, 94.20, 96.35), "How to train your HiPPO"),
    "S4D-LegS": ((60.47, 86.18, 89.46, 88.19, 93.06, 91.95), "arXiv 2206.11893"),
    "S4D-Inv": ((60.18, 87.34, 91.09, 87.83, 93.78, 92.80), "arXiv 2206.11893"),
    "S5": ((62.15, 89.31, 91.40, 88.00, 95.33, 98.58), "S5 paper"),
    "Mega": ((63.14, 90.43, 91.25, 90.44, 96.01, 97.98), "Mega paper"),
    "LRU": ((60.2, 89.4, 89.9, 89.0, 95.1, 94.2), "LRU paper (colour CIFAR)"),
    "RWKV": ((55.88, 86.04, 88.34, 70.53, 58.42, None), "RWKV paper, Table 4"),
}


def counterparts() -> dict[str, str]:
    """Which published row each architecture is compared with (its LRA recipe says)."""
    from arch.registry import ARCHS

    found = {n: (s.recipes.get("lra") or {}).get("published") for n, s in ARCHS.items()}
    return {n: row for n, row in found.items() if row in PUBLISHED}


def _lra_runs(runs_dir: str):
    """``(workdir, arch, task, results)`` of every LRA run under ``runs_dir``, in path order."""
    if not os.path.isdir(runs_dir):
        raise FileNotFoundError(f"{runs_dir} is not a directory of runs (each with results.json)")
    for path in sorted(glob.glob(os.path.join(runs_dir, "**", "results.json"), recursive=True)):
        try:
            with open(path) as f:
                results = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            print(f"skipped {path}: unreadable ({error})")
            continue
        config = results.get("config") or {}
        task = (config.get("task") or {}).get("name")
        if task in TASKS and config.get("arch"):
            yield os.path.dirname(path), config["arch"], task, results


def collect(runs_dir: str) -> tuple[dict[str, dict[str, float]], dict[str, set[str]]]:
    """``({arch: {task: accuracy in %}}, {arch: tasks scored on validation})``."""
    scores: dict[str, dict[str, float]] = {}
    on_val: dict[str, set[str]] = {}
    chosen: dict[tuple[str, str], tuple[float, float]] = {}  # chosen on validation
    for _, arch, task, results in _lra_runs(runs_dir):
        best = results.get("best") or results.get("final") or {}
        val = best.get("eval_accuracy")
        acc = best.get("test_accuracy", val)
        if val is None:
            continue
        # Higher validation accuracy wins; ties go to the lower validation loss.
        key = (float(val), -float(best.get("eval_loss", float("inf"))))
        if (arch, task) in chosen and key <= chosen[arch, task]:
            continue
        chosen[arch, task] = key
        scores.setdefault(arch, {})[task] = 100.0 * float(acc)
        tasks_on_val = on_val.setdefault(arch, set())
        if "test_accuracy" in best:
            tasks_on_val.discard(task)
        else:
            tasks_on_val.add(task)
    return scores, on_val


def _avg(values) -> float | None:
    """Average over the six tasks; a failed / missing Path-X counts as chance (50)."""
    filled = [v for v in values[:5] if v is not None]
    if len(filled) < 5:
        return None
    return (sum(filled) + (values[5] if values[5] is not None else 50.0)) / 6


def _our_source(val_tasks: set[str]) -> str:
    if not val_tasks:
        return "this repo (test acc.)"
    names = ", ".join(h for t, h in zip(TASKS, HEADERS, strict=True) if t in val_tasks)
    return f"this repo (validation acc. for {names})"


def rows(scores: dict[str, dict[str, float]], on_val: dict[str, set[str]]) -> list[dict]:
    counterpart = counterparts()
    out = []
    for arch in sorted(scores):
        values = tuple(scores[arch].get(t) for t in TASKS)
        out.append(
            {
                "model": f"{arch} (ours)",
                **dict(zip(HEADERS, values, strict=True)),
                "Avg": _avg(values),
                "source": _our_source(on_val.get(arch, set())),
            }
        )
        if arch in counterpart:
            pub, _ = PUBLISHED[counterpart[arch]]
            diff = tuple(
                None if o is None or p is None else o - p for o, p in zip(values, pub, strict=True)
            )
            out.append(
                {
                    "model": f"  vs {counterpart[arch]}",
                    **dict(zip(HEADERS, diff, strict=True)),
                    "Avg": None,
                    "source": "difference (points)",
                }
            )
    for name, (values, source) in PUBLISHED.items():
        out.append(
            {
                "model": name,
                **dict(zip(HEADERS, values, strict=True)),
                "Avg": _avg(values),
                "source": source,
            }
        )
    return out


def run_dirs(runs_dir: str) -> dict[str, dict[str, str]]:
    """``{task: {"arch (run dir)": run dir}}`` for every LRA run under ``runs_dir``."""
    out: dict[str, dict[str, str]] = {}
    for workdir, arch, task, _ in _lra_runs(runs_dir):
        label = f"{arch} ({os.path.relpath(workdir, runs_dir)})"
        out.setdefault(HEADERS[TASKS.index(task)], {})[label] = workdir
    return out


def write_table(runs_dir: str, out: str) -> str:
    """Write ``lra_table.md``, ``lra_table.csv`` and, when there are runs, the accuracy
    against training time plot ``lra_curves.png`` into ``out``; return the Markdown."""
    from experiments import plots  # deferred: matplotlib

    table_rows = rows(*collect(runs_dir))
    panels = run_dirs(runs_dir)
    if panels:
        plots.accuracy_vs_time(panels, os.path.join(out, "lra_curves.png"))
    columns = ("model", *HEADERS, "Avg", "source")
    os.makedirs(out, exist_ok=True)
    text = tables.markdown(table_rows, columns)
    with open(os.path.join(out, "lra_table.md"), "w") as f:
        f.write(text + "\n")
    tables.write_csv(table_rows, columns, os.path.join(out, "lra_table.csv"))
    return text
