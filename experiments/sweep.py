"""Sweeps: a product grid over config fields and seeds, one ordinary run per point.

A sweep config (``configs/sweeps/*.py``) names a training config file (``base``), a grid
written like the training config (``grid.arch``, ``grid.model.d_state``,
``grid.train.lr``: each a tuple of values), ``seeds`` and the fields every run shares
(``fixed``). Each point is an ordinary run directory ``<sweep dir>/<arch>__<field>=<v>...``
made by ``experiments.train.train``, so the run-directory contract holds: re-running the
sweep skips finished runs (their ``results.json`` is never rewritten) and resumes
unfinished ones from their latest checkpoint.

Each architecture gets its own recipe: a run of arch ``a`` starts from ``base`` loaded as
``path.py:a[,variant]`` (as ``run.py compare`` does), then ``fixed``, then its grid point.

Where the runs execute is ``backend`` (``experiments/sweep_backends.py``): in this
process, in worker processes, as Ray tasks or as submitit (SLURM) jobs.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
from ml_collections import config_dict

from experiments import rundir
from experiments.config import load_config_file, override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_JSON = "sweep.json"
SEED = "train.seed"


def get_config() -> ml_collections.ConfigDict:
    """The sweep schema with its defaults; sweep files start here and change values."""
    c = ml_collections.ConfigDict()
    # Training config file, optionally with a variant: "configs/lra/listops.py:,small".
    # The arch after ':' is replaced by each grid.arch value.
    c.base = "configs/synthetic/mqar.py"
    # Product grid, nested like the training config; every leaf is a tuple of values.
    # grid.arch lists architectures (default: the base file's own arch).
    c.grid = ml_collections.ConfigDict()
    c.seeds = (0,)  # train.seed of each grid point; aggregated as mean ± std in tables
    c.fixed = ml_collections.ConfigDict()  # fields set on every run, nested likewise

    c.backend = "local"  # a name of experiments.sweep_backends.BACKENDS
    c.workers = 1  # local: runs at a time (1 = in this process, >1 = worker processes)
    c.ray = ml_collections.ConfigDict()
    c.ray.address = config_dict.placeholder(str)  # None: start a local Ray; "auto": join one
    c.ray.cpus_per_run = 1
    c.ray.gpus_per_run = 0.0
    c.submitit = ml_collections.ConfigDict()
    c.submitit.cluster = config_dict.placeholder(str)  # None: SLURM if present, else local
    c.submitit.folder = config_dict.placeholder(str)  # job logs (default <sweep>/submitit)
    c.submitit.timeout_min = 60
    c.submitit.partition = config_dict.placeholder(str)
    c.submitit.gpus_per_node = 0
    c.submitit.cpus_per_task = 2
    c.submitit.mem_gb = 16
    c.submitit.array_parallelism = 64

    # How `run.py table sweep` reads the runs (experiments/sweep_table.py).
    c.table = ml_collections.ConfigDict()
    c.table.metric = "final.eval_accuracy"  # a dotted path into results.json
    c.table.mode = "max"  # "max" or "min": which value of the metric is best
    # Swept fields to choose the best value of per cell (zoology: the best lr per model
    # and size), by the mean over seeds; the chosen value is a column of the table.
    c.table.select = ("train.lr",)
    c.table.x = ("state",)  # plot the metric against these (swept fields or "state")
    c.table.panel = config_dict.placeholder(str)  # one panel per value of this field
    c.lock()
    for open_key in ("grid", "fixed"):
        c[open_key].unlock()
    return c


class SweepError(ValueError):
    """A sweep config that cannot be expanded, or runs that failed; the message says which."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One grid point: everything a worker on another machine needs to train it."""

    name: str
    workdir: str  # absolute
    config_file: str  # absolute "path.py:arch[,variant]"
    overrides: tuple[tuple[str, Any], ...]  # dotted field -> value, in order

    def config(self) -> ml_collections.ConfigDict:
        return override(load_config_file(self.config_file), dict(self.overrides))

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.workdir, rundir.RESULTS))


def grid_points(sweep) -> list[dict[str, Any]]:
    """Every point of the grid, seeds last: ``[{"arch": .., "model.d_model": .., ...}]``."""
    grid = rundir.flatten(sweep.grid.to_dict())
    for key, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise SweepError(
                f"grid.{key} = {values!r}: give a non-empty tuple of values, e.g. (32, 64)"
            )
    if SEED in grid:
        raise SweepError("grid.train.seed: list seeds in `seeds`, not in the grid")
    seeds = tuple(sweep.seeds)
    if not seeds:
        raise SweepError("seeds is empty: give at least one, e.g. (0,)")
    keys = [*grid, SEED]
    combos = itertools.product(*grid.values(), seeds)
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def run_name(point: dict[str, Any]) -> str:
    """``mamba__d_model=64__lr=0.001__seed=0``: the arch, then each field by its last
    component (the full dotted name where two fields share one)."""
    fields = [k for k in point if k != "arch"]
    last = [k.rsplit(".", 1)[-1] for k in fields]
    parts = [str(point["arch"])] if "arch" in point else []
    for key, short in zip(fields, last, strict=True):
        label = short if last.count(short) == 1 else key
        parts.append(f"{label}={_format(point[key])}")
    return "__".join(parts).replace(os.sep, "-")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "-".join(_format(v) for v in value)
    return str(value)


def expand(sweep, root: str) -> list[RunSpec]:
    """The sweep's runs under ``root``; checks every config loads before anything runs."""
    path, _, arg = sweep.base.partition(":")
    if not os.path.exists(path):  # a path relative to the repository, run from elsewhere
        path = os.path.join(ROOT, path) if os.path.exists(os.path.join(ROOT, path)) else path
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise SweepError(f"base = {sweep.base!r}: config file {path} not found")
    base_arch, _, variant = arg.partition(",")
    fixed = rundir.flatten(sweep.fixed.to_dict())
    specs = []
    for point in grid_points(sweep):
        arch = point.get("arch", base_arch)
        arg = (arch or "") + (f",{variant}" if variant else "")
        overrides = {**fixed, **{k: v for k, v in point.items() if k != "arch"}}
        specs.append(
            RunSpec(
                name=run_name(point),
                workdir=os.path.abspath(os.path.join(root, run_name(point))),
                config_file=f"{path}:{arg}" if arg else path,
                overrides=tuple(overrides.items()),
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SweepError("two grid points share a run name; give the grid distinct values")
    for spec in {s.config_file: s for s in specs}.values():  # one load per arch
        try:
            spec.config()
        except (KeyError, ValueError, FileNotFoundError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise SweepError(f"run {spec.name}: {message}") from None
    return specs


def run_spec(spec: RunSpec) -> dict[str, Any]:
    """Train one grid point (resuming it if unfinished); the function every backend
    calls, in this process or on a worker. Returns ``{"name", "status", "error"}``."""
    from experiments.train import TrainingError, train

    if spec.finished:
        return {"name": spec.name, "status": "finished", "error": None}
    try:
        train(spec.config(), spec.workdir)
    except (TrainingError, ValueError, KeyError, FileNotFoundError) as error:
        return {"name": spec.name, "status": "failed", "error": str(error)}
    return {"name": spec.name, "status": "trained", "error": None}


def run_sweep(sweep, root: str) -> list[dict[str, Any]]:
    """Run every unfinished point of ``sweep`` under ``root`` with ``sweep.backend``."""
    from experiments import sweep_backends

    sweep_backends.check(sweep)
    specs = expand(sweep, root)
    rundir.check_usable(root)
    _record(sweep, root, specs)
    todo = [s for s in specs if not s.finished]
    resuming = sum(rundir.has_run(s.workdir) for s in todo)
    print(
        f"sweep: {len(specs)} runs in {root}: {len(specs) - len(todo)} finished, "
        f"{resuming} to resume, {len(todo) - resuming} new; backend {sweep.backend}",
        flush=True,
    )
    outcomes = sweep_backends.run(sweep, root, todo)
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        lines = "\n".join(f"  {o['name']}: {o['error']}" for o in failed)
        raise SweepError(
            f"{len(failed)} of {len(todo)} runs failed (the others are saved; re-run the "
            f"sweep to retry only these):\n{lines}"
        )
    return outcomes


def _record(sweep, root: str, specs: Sequence[RunSpec]) -> None:
    """``sweep.json``: the sweep config and its runs, for ``run.py table sweep``.

    Kept as the union over invocations, so a grid extended later still lists the runs
    an earlier invocation made."""
    path = os.path.join(root, SWEEP_JSON)
    earlier = rundir.read_json(path).get("runs", {}) if os.path.exists(path) else {}
    runs = {**earlier, **{s.name: dict(s.overrides) for s in specs}}
    rundir.write_json(path, {"sweep": sweep.to_dict(), "runs": runs})
