"""The zero-shot table: our evaluations beside the published rows, and the RWKV figure.

    python run.py table zeroshot runs/zeroshot   # reads runs/zeroshot/**/results.json

Each task shows the metric the papers report (``ZeroShotTask.headline``: acc_norm for
HellaSwag, ARC-Challenge and OpenBookQA, acc otherwise; LAMBADA's perplexity too), in
percent. A run is set beside the published rows of the model it evaluated: the row its
``results.json`` names (``published``, from ``run.py zeroshot --name``), else the rows
whose model name matches the weights' file name, or else the run directory's name
(``pythia-160m`` -> "Pythia 160M" and "Pythia-160M", one row per paper). The
difference is ours minus theirs.

The figure follows the RWKV paper's zero-shot figure (Peng et al. 2023):
per task, accuracy against parameter count, one line per model family, our runs as
labelled points.
"""

from __future__ import annotations

import glob
import json
import os
import re

from experiments import tables
from experiments.zeroshot.published import ROWS
from experiments.zeroshot.tasks import TASKS

LAMBADA = "lambada_openai"
HEADERS = {
    "lambada_openai": "LAMBADA",
    "hellaswag": "HellaSwag",
    "piqa": "PIQA",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "winogrande": "WinoGrande",
    "openbookqa": "OBQA",
    "sciq": "SciQ",
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def matching_rows(result: dict, run_name: str = "") -> list:
    """Published rows for a run: the one it names, else those its weights' file name (or
    else its run directory's name) matches."""
    named = result.get("published")
    if named:
        rows = [r for r in ROWS if _key(r.model) == _key(named)]
        if not rows:
            valid = ", ".join(sorted({r.model for r in ROWS}))
            raise ValueError(f"published row {named!r} unknown; valid: {valid}")
        return rows
    for name in (os.path.basename(str(result.get("weights", "")).rstrip("/")), run_name):
        found = [r for r in ROWS if _key(r.model) in _key(name)]
        if found:
            longest = max(len(_key(r.model)) for r in found)
            return [r for r in found if len(_key(r.model)) == longest]
    return []


def our_scores(result: dict) -> dict[str, float]:
    """{column: value}: headline metrics in percent, LAMBADA's ppl as is."""
    out = {}
    for name, metrics in result.get("tasks", {}).items():
        if name not in TASKS:
            continue
        out[HEADERS[name]] = 100.0 * metrics[TASKS[name].headline]
        if name == LAMBADA:
            out["LAMBADA ppl"] = metrics["ppl"]
    return out


def published_scores(row) -> dict[str, float]:
    out = {}
    for name, metrics in row.scores.items():
        out[HEADERS[name]] = metrics[TASKS[name].headline]
        if name == LAMBADA:
            out["LAMBADA ppl"] = metrics["ppl"]
    return out


def collect(runs_dir: str) -> list[tuple[str, dict]]:
    paths = sorted(glob.glob(os.path.join(runs_dir, "**", "results.json"), recursive=True))
    out = []
    for path in paths:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable results.json ({error})") from None
        if "tasks" in result and "weights" in result:  # a zero-shot results.json
            out.append((os.path.relpath(os.path.dirname(path), runs_dir) or ".", result))
    return out


def rows(runs: list[tuple[str, dict]]) -> tuple[list[dict], list[str]]:
    columns = ["model", "params", "source", "LAMBADA ppl", *HEADERS.values()]
    table = []
    for name, result in runs:
        ours = our_scores(result)
        table.append({"model": f"ours: {name}", "params": result.get("n_params"), **ours,
                      "source": f"measured ({_limit(result)})"})  # fmt: skip
        for row in matching_rows(result, os.path.basename(name)):
            theirs = published_scores(row)
            table.append({"model": row.model, "params": int(row.params), **theirs,
                          "source": row.source})  # fmt: skip
            diff = {k: ours[k] - v for k, v in theirs.items() if k in ours}
            table.append(
                {"model": f"  difference vs {row.model}", **diff, "source": "ours - theirs"}
            )
    if not runs:  # the published rows alone, so the command still shows the target
        for row in ROWS:
            table.append({"model": row.model, "params": int(row.params),
                          **published_scores(row), "source": row.source})  # fmt: skip
    return table, columns


def _limit(result: dict) -> str:
    docs = sum(m.get("n_docs", 0) for m in result.get("tasks", {}).values())
    return f"{docs} docs" + (f", first {result['limit']} per task" if result.get("limit") else "")


def figure(runs: list[tuple[str, dict]], path: str) -> str:
    """Accuracy against parameter count per task, one line per published family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(HEADERS)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for ax, task in zip(axes.flat, names, strict=True):
        header = HEADERS[task]
        for family in sorted({r.family for r in ROWS}):
            points = sorted(
                (r.params, published_scores(r)[header])
                for r in ROWS
                if r.family == family and header in published_scores(r)
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, "o-", label=family)
        for name, result in runs:
            score = our_scores(result).get(header)
            if score is not None and result.get("n_params"):
                ax.plot(result["n_params"], score, "k*", markersize=10)
                ax.annotate(name, (result["n_params"], score), fontsize=7)
        ax.set_xscale("log")
        ax.set_title(f"{header} ({TASKS[task].headline}, %)")
        ax.set_xlabel("parameters")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Zero-shot accuracy against size (published lines; ours: stars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_table(runs_dir: str, out: str) -> str:
    if not os.path.isdir(runs_dir):
        raise ValueError(
            f"{runs_dir} is not a directory; pass the directory that holds the --workdir "
            "of your `run.py zeroshot` runs"
        )
    runs = collect(runs_dir)
    table, columns = rows(runs)
    os.makedirs(out, exist_ok=True)
    text = tables.markdown(table, columns)
    if not runs:
        text = f"(no zero-shot results.json under {runs_dir}: the published rows alone)\n" + text
    note = (
        "Accuracies in percent (acc_norm for HellaSwag, ARC-c and OBQA; acc otherwise), "
        "lm-eval 0.4 rules; LAMBADA ppl per word. Published rows: the papers named in "
        "'source'."
    )
    with open(os.path.join(out, "zeroshot_table.md"), "w") as f:
        f.write(text + "\n\n" + note + "\n")
    tables.write_csv(table, columns, os.path.join(out, "zeroshot_table.csv"))
    figure(runs, os.path.join(out, "zeroshot_figure.png"))
    return text + "\n\n" + note
