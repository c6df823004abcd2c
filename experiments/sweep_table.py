"""``run.py table sweep DIR``: a sweep's runs aggregated over seeds, best value chosen per
cell, written as Markdown, CSV and plots.

The store is the run directories themselves (each ``results.json`` carries its config),
so any directory of runs can be tabulated. The swept fields are the grid of
``sweep.json`` when the sweep wrote one, else the config fields that differ between runs.
Seeds are aggregated as mean ± sample std (n - 1 in the denominator) with their count n.
Then, as zoology selects learning rates, within every cell the value of each ``select``
field (default ``train.lr``) with the best mean is kept: seeds are averaged first, so the
choice is not a lucky seed.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments import rundir, tables
from experiments.sweep import SEED, SWEEP_JSON, SweepError, get_config

STATE = "state"  # pseudo-field: recurrent state floats per sequence per layer
# Fields that differ between runs without changing what they compute.
IGNORED = (SEED, *rundir.BOOKKEEPING)


def load_runs(root: str) -> tuple[list[dict[str, Any]], int]:
    """Finished runs under ``root`` (``{"config": flat, "results": ...}``) and how many
    run directories are unfinished."""
    if not os.path.isdir(root):
        raise SweepError(f"{root} is not a directory; pass the sweep's directory")
    runs, unfinished = [], 0
    for name in sorted(os.listdir(root)):
        workdir = os.path.join(root, name)
        if not os.path.isdir(workdir) or not rundir.has_run(workdir):
            continue
        path = os.path.join(workdir, rundir.RESULTS)
        if not os.path.exists(path):
            unfinished += 1
            continue
        results = rundir.read_json(path)
        runs.append({**results, "name": name, "config": rundir.flatten(results["config"])})
    return runs, unfinished


def swept_fields(runs: Sequence[dict], grid: Sequence[str] | None) -> list[str]:
    """``arch`` first, then the grid's fields (or every field that differs)."""
    if grid is None:
        keys = sorted({k for r in runs for k in r["config"]})
        grid = [
            k
            for k in keys
            if len({repr(r["config"].get(k)) for r in runs}) > 1
            and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in IGNORED)
        ]
    return ["arch", *(k for k in grid if k not in ("arch", SEED))]


def metric_of(results: dict, path: str) -> float | None:
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def aggregate(runs: Sequence[dict], fields: Sequence[str], metric: str) -> list[dict]:
    """One row per distinct value of ``fields``: metric mean, std, n over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[tuple(_key(run["config"].get(f)) for f in fields)].append(run)
    rows = []
    for key, members in groups.items():
        values = [v for v in (metric_of(r, metric) for r in members) if v is not None]
        states = [(r.get("state") or {}).get("per_layer") for r in members]
        rows.append(
            {
                **dict(zip(fields, key, strict=True)),
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "n": len(values),
                "seeds": sorted(r["config"].get(SEED) for r in members),
                STATE: states[0],
                "params": members[0].get("params"),
            }
        )
    return rows


def select_best(rows: Sequence[dict], fields: Sequence[str], select: Sequence[str], mode: str):
    """Within each cell (``fields`` minus ``select``), the row whose mean is best."""
    if mode not in ("max", "min"):
        raise SweepError(f"table.mode = {mode!r}: use 'max' or 'min'")
    select = [f for f in select if f in fields]
    cell_fields = [f for f in fields if f not in select]
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        cells[tuple(row[f] for f in cell_fields)].append(row)
    sign = 1.0 if mode == "max" else -1.0
    best = [
        max(members, key=lambda r: -math.inf if r["mean"] is None else sign * r["mean"])
        for members in cells.values()
    ]
    return sorted(best, key=lambda r: tuple(_sortable(r[f]) for f in fields))


def write_table(root: str, out: str | None = None) -> str:
    """Aggregate the runs under ``root``; write sweep_table.md/.csv and the plots in
    ``out`` (default ``root``); returns the Markdown table."""
    from experiments import plots

    out = out or root
    options, grid = _options(root)
    runs, unfinished = load_runs(root)
    if not runs:
        raise SweepError(
            f"no finished runs under {root}"
            + (f" ({unfinished} unfinished: re-run the sweep to finish them)" if unfinished else "")
        )
    fields = swept_fields(runs, grid)
    rows = aggregate(runs, fields, options["metric"])
    rows = select_best(rows, fields, options["select"], options["mode"])
    labels = {f: _label(f, fields) for f in fields}
    shown = [
        {
            **{labels[f]: r[f] for f in fields},
            options["metric"]: _mean_std(r["mean"], r["std"]),
            "n": r["n"],
            "state_per_layer": r[STATE],
            "params": r["params"],
        }
        for r in rows
    ]
    columns = [*labels.values(), options["metric"], "n", "state_per_layer", "params"]
    text = tables.markdown(shown, columns)
    if unfinished:
        text += f"\n\n{unfinished} unfinished run(s) not shown; re-run the sweep to finish them."
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep_table.md"), "w") as f:
        f.write(text + "\n")
    csv_rows = [
        {**{labels[f]: r[f] for f in fields}, "mean": r["mean"], "std": r["std"], "n": r["n"],
         "state_per_layer": r[STATE], "params": r["params"]}
        for r in rows
    ]  # fmt: skip
    tables.write_csv(
        csv_rows, [*labels.values(), "mean", "std", "n", "state_per_layer", "params"],
        os.path.join(out, "sweep_table.csv"),
    )  # fmt: skip
    for x in options["x"]:
        if x != STATE and x not in fields:
            continue  # not swept here
        plots.sweep_lines(
            rows,
            x=x,
            # a field chosen per cell (the best lr) is not a line of its own
            fields=[f for f in fields if f == x or f not in options["select"]],
            labels=labels,
            panel=options["panel"] if options["panel"] in fields else None,
            metric=options["metric"],
            path=os.path.join(out, f"sweep_{labels.get(x, x)}.png"),
        )
    return text


def _options(root: str) -> tuple[dict[str, Any], list[str] | None]:
    """The table options and grid fields from ``sweep.json`` (defaults without one)."""
    defaults = get_config().table.to_dict()
    path = os.path.join(root, SWEEP_JSON)
    if not os.path.exists(path):
        return defaults, None
    sweep = rundir.read_json(path)["sweep"]
    grid = list(rundir.flatten(sweep.get("grid", {})))
    return {**defaults, **sweep.get("table", {})}, grid


def _label(field: str, fields: Sequence[str]) -> str:
    short = field.rsplit(".", 1)[-1]
    return short if [f.rsplit(".", 1)[-1] for f in fields].count(short) == 1 else field


def _mean_std(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _key(value):
    """A hashable, printable stand-in for a config value (JSON lists and dicts)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _sortable(value):
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))
