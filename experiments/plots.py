"""Matplotlib figures built from run directories (metrics.jsonl / results.json)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from experiments.logging_utils import read_metrics  # noqa: E402


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def learning_curves(runs: Mapping[str, str], path: str) -> str:
    """Train loss and eval accuracy against step, one line per run (``{label: workdir}``)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for label, workdir in runs.items():
        records = read_metrics(workdir)
        ax_loss.plot(*_series(records, "loss"), label=label)
        ax_acc.plot(*_series(records, "eval_accuracy"), marker="o", label=label)
    ax_loss.set(xlabel="step", ylabel="train loss", yscale="log", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="eval accuracy", ylim=(0, 1.02), title="Eval accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def train_minutes(records: list[dict]) -> dict[int, float]:
    """Cumulative training time in minutes at each logged step (evaluation excluded).

    Each train line carries the mean ``step_time`` of the steps since the previous line.
    """
    train_lines = sorted((r for r in records if "step_time" in r), key=lambda r: r["step"])
    out, total, previous = {}, 0.0, 0
    for r in train_lines:
        total += r["step_time"] * (r["step"] - previous)
        previous = r["step"]
        out[r["step"]] = total / 60.0
    return out


def accuracy_vs_time(panels: Mapping[str, Mapping[str, str]], path: str) -> str:
    """Eval accuracy against training minutes: one panel per title (``{title: {label:
    workdir}}``), one line per run. Compares runs at equal compute, not equal steps."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels.items(), strict=True):
        for label, workdir in sorted(runs.items()):
            records = read_metrics(workdir)
            minutes = train_minutes(records)
            points = [
                (minutes[r["step"]], r["eval_accuracy"])
                for r in records
                if "eval_accuracy" in r and r["step"] in minutes
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set(
            xlabel="training time (min; compile included, evaluation not)", ylabel="val accuracy"
        )
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def bars(
    labels: Sequence[str], values: Sequence[float], ylabel: str, path: str, title: str = ""
) -> str:
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.5))
    bars_ = ax.bar(labels, values, color="tab:blue")
    ax.bar_label(bars_, fmt="%.3f", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def grouped_bars(
    groups: Mapping[str, Mapping[str, tuple[float, str]]],
    ylabel: str,
    path: str,
    *,
    reference: float | None = None,
    title: str = "",
) -> str:
    """Per group (x tick), one bar per series, each ``(value, text above the bar)``;
    ``reference`` draws a dashed horizontal line (a target)."""
    names = list(dict.fromkeys(k for bars_ in groups.values() for k in bars_))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(0.3 * len(groups) * max(1, len(names)) + 2, 3.8))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(groups))]
        cells = [groups[g].get(name, (float("nan"), "")) for g in groups]
        drawn = ax.bar(xs, [v for v, _ in cells], width, label=name)
        ax.bar_label(drawn, labels=[t for _, t in cells], fontsize=6, rotation=90, padding=2)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def lines(
    series: Mapping[str, Sequence[tuple[float, float]]],
    xlabel: str,
    ylabel: str,
    path: str,
    *,
    loglog: bool = False,
    title: str = "",
) -> str:
    """One line per label through ``(x, y)`` points."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    if loglog:
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sweep_lines(
    rows: Sequence[dict],
    *,
    x: str,
    fields: Sequence[str],
    labels: Mapping[str, str],
    panel: str | None,
    metric: str,
    path: str,
) -> str:
    """A sweep's metric against ``x`` (a swept field, or "state": floats per layer, log
    axis), one panel per value of ``panel``, one line per arch (and any other field in
    ``fields`` that is not ``x``'s), error bars = std over seeds."""
    # With x = state the model fields move the point along the state axis: not a line each.
    along_x = {x} | ({f for f in fields if f.startswith("model.")} if x == "state" else set())
    line_fields = [f for f in fields if f not in along_x and f != panel and f in rows[0]]
    panels = sorted({r[panel] for r in rows}) if panel else [None]

    def label_of(r):
        return ", ".join(str(r[f]) if f == "arch" else f"{labels[f]}={r[f]}" for f in line_fields)

    # One colour per line in every panel, so a line is the same arch across panels.
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {lab: cycle[i % len(cycle)] for i, lab in enumerate(sorted(set(map(label_of, rows))))}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, value in zip(axes[0], panels, strict=True):
        series: dict[str, list[tuple[float, float, float]]] = {}
        for r in rows:
            if panel and r[panel] != value or r["mean"] is None or r.get(x) is None:
                continue
            series.setdefault(label_of(r), []).append((r[x], r["mean"], r["std"] or 0.0))
        for label, points in sorted(series.items()):
            xs, ys, errs = zip(*sorted(points), strict=True)
            ax.errorbar(
                xs, ys, yerr=errs, marker="o", markersize=4, capsize=3, label=label,
                color=colour[label],
            )  # fmt: skip
        values = [r[x] for r in rows if isinstance(r.get(x), int | float) and r[x] > 0]
        if x == "state" or (values and max(values) >= 10 * min(values)):
            ax.set_xscale("log")  # state sizes and learning rates span decades
        ax.set(
            xlabel="recurrent state (floats per sequence per layer)"
            if x == "state"
            else labels.get(x, x),
            ylabel=metric,
            title=f"{labels[panel]} = {value}" if panel else "",
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)
