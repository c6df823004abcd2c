"""Sweeps: grid expansion, the seed-aggregated table, and real sweeps through the local,
Ray and submitit backends, killed and re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import rundir, sweep, sweep_table
from experiments.config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "sweeps", "smoke.py")


def _sweep(**changes):
    config = load_config_file(SMOKE)
    with config.unlocked():
        for key, value in changes.items():
            node, leaf = config, key
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
    return config


def test_grid_expands_to_named_runs_with_fixed_fields(tmp_path):
    specs = sweep.expand(_sweep(), str(tmp_path))
    assert [s.name for s in specs] == [
        f"{arch}__d_model={d}__seed={seed}"
        for arch in ("rwkv", "mamba")
        for d in (8, 16)
        for seed in (0, 1)
    ]
    config = specs[-1].config()
    assert (config.arch, config.model.d_model, config.train.seed) == ("mamba", 16, 1)
    assert config.train.steps == 3  # `fixed`
    assert config.model.n_layers == 1  # the base's ",smoke" variant
    assert all(os.path.isabs(s.workdir) for s in specs)


SWEEP_CONFIGS = sorted(
    f for f in os.listdir(os.path.join(ROOT, "configs", "sweeps")) if not f.startswith("_")
)


@pytest.mark.parametrize("name", SWEEP_CONFIGS)
def test_every_shipped_sweep_expands_to_configs_that_load(name, tmp_path):
    config = load_config_file(os.path.join(ROOT, "configs", "sweeps", name))
    specs = sweep.expand(config, str(tmp_path))
    assert len(specs) == len(sweep.grid_points(config)) > 1
    for spec in specs:  # every override is a real key with a value of the right type
        run = spec.config()
        for key, value in spec.overrides:
            node = run
            for part in key.split("."):
                node = node[part]
            assert node == value, (spec.name, key)


def test_run_names_disambiguate_fields_sharing_a_last_component():
    name = sweep.run_name({"arch": "s4d", "model.d_state": 4, "task.options.d_state": 8})
    assert name == "s4d__model.d_state=4__task.options.d_state=8"
    assert sweep.run_name({"arch": "s4d", "train.lr": 3e-4, "train.seed": 0}) == (
        "s4d__lr=0.0003__seed=0"
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"seeds": ()}, "seeds is empty"),
        ({"base": "configs/nowhere.py"}, "not found"),
        ({"grid.arch": ("rwkv", "nonesuch")}, "nonesuch"),
        ({"fixed.train.stepz": 3}, "stepz"),
        ({"grid.lr": 0.1}, "non-empty tuple"),
        ({"workers": 0}, "workers = 0"),
    ],
)
def test_bad_sweep_configs_fail_before_anything_runs(tmp_path, changes, match):
    with pytest.raises(sweep.SweepError, match=match):
        sweep.run_sweep(_sweep(**changes), str(tmp_path / "s"))
    assert not os.path.exists(tmp_path / "s")


def test_a_failing_run_is_reported_and_the_others_are_saved(tmp_path):
    root = tmp_path / "s"
    config = _sweep(**{"grid.arch": ("rwkv",)})
    config.grid.model.d_model = (8,)
    taken = root / "rwkv__d_model=8__seed=1"  # holds a run of another config
    taken.mkdir(parents=True)
    other = load_config_file(f"{ROOT}/configs/synthetic/mqar.py:mamba,smoke").to_dict()
    rundir.write_json(str(taken / "config.json"), other)
    with pytest.raises(sweep.SweepError, match=r"1 of 2 runs failed") as failure:
        sweep.run_sweep(config, str(root))
    assert "rwkv__d_model=8__seed=1: " in str(failure.value)
    assert "different config" in str(failure.value)
    assert (root / "rwkv__d_model=8__seed=0" / "results.json").exists()
    assert json.load(open(taken / "config.json")) == json.loads(json.dumps(other))


def _fake_run(root, name, arch, lr, seed, accuracy, state=100.0):
    """A finished run directory as train() leaves it (config inside results.json)."""
    config = load_config_file(f"{ROOT}/configs/synthetic/mqar.py:{arch},smoke").to_dict()
    config["train"].update(lr=lr, seed=seed)
    workdir = root / name
    workdir.mkdir(parents=True)
    rundir.write_json(str(workdir / "config.json"), config)
    results = {
        "config": config,
        "final": {"eval_accuracy": accuracy},
        "state": {"per_layer": state},
        "params": 10,
    }
    rundir.write_json(str(workdir / "results.json"), results)


def test_table_averages_seeds_then_picks_the_best_lr_by_mean(tmp_path):
    # lr 1e-3 has the single best seed (0.99) but the worse mean: it must not be chosen.
    accs = {(1e-3, 0): 0.99, (1e-3, 1): 0.21, (3e-3, 0): 0.80, (3e-3, 1): 0.70}
    for (lr, seed), acc in accs.items():
        _fake_run(tmp_path, f"rwkv_{lr}_{seed}", "rwkv", lr, seed, acc)
    _fake_run(tmp_path, "mamba_one", "mamba", 1e-3, 0, 0.5, state=200.0)
    (tmp_path / "unfinished").mkdir()
    rundir.write_json(str(tmp_path / "unfinished" / "config.json"), {})

    text = sweep_table.write_table(str(tmp_path))
    rows = {r["arch"]: r for r in _csv(tmp_path / "sweep_table.csv")}
    assert float(rows["rwkv"]["lr"]) == 3e-3
    assert float(rows["rwkv"]["mean"]) == pytest.approx(np.mean([0.80, 0.70]))
    assert float(rows["rwkv"]["std"]) == pytest.approx(np.std([0.80, 0.70], ddof=1))
    assert rows["rwkv"]["n"] == "2" and rows["mamba"]["n"] == "1"
    assert "0.750 ± 0.071" in text and "1 unfinished run(s)" in text
    assert (tmp_path / "sweep_state.png").stat().st_size > 0


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_table_of_a_directory_without_finished_runs_says_so(tmp_path):
    with pytest.raises(sweep.SweepError, match="no finished runs"):
        sweep_table.write_table(str(tmp_path))


def _run_py(log, *args):
    """run.py in a subprocess, its output in the file ``log`` (a pipe nobody reads
    could fill up and stall it)."""
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run.py"), *args],
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )


def _results(root):
    if not os.path.isdir(root):
        return {}
    return {
        name: open(os.path.join(root, name, "results.json")).read()
        for name in sorted(os.listdir(root))
        if os.path.exists(os.path.join(root, name, "results.json"))
    }


def test_sweep_killed_and_rerun_finishes_every_run_without_redoing_any(tmp_path):
    root = str(tmp_path / "smoke")
    args = ["sweep", "--config", SMOKE, "--workdir", root]
    first = _run_py(tmp_path / "first.log", *args)
    deadline = time.monotonic() + 300
    while not _results(root) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no clean shutdown: as a lost node
    first.wait(timeout=60)
    before = _results(root)
    assert 1 <= len(before) < 8, (tmp_path / "first.log").read_text()

    second = _run_py(tmp_path / "second.log", *args, "--config.workers=2")  # worker processes
    second.wait(timeout=600)
    out = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, out
    assert f"{len(before)} finished" in out
    after = _results(root)
    assert len(after) == 8
    assert all(after[name] == text for name, text in before.items())  # never rewritten
    rows = _csv(os.path.join(root, "sweep_table.csv"))
    assert len(rows) == 4 and {r["n"] for r in rows} == {"2"}
    assert all(r["std"] not in ("", None) for r in rows)
    assert "±" in open(os.path.join(root, "sweep_table.md")).read()
    assert json.load(open(os.path.join(root, "sweep.json")))["runs"].keys() == after.keys()


# Ray's raylet is started with subprocess (fork + exec at once), which JAX's warning about
# forking a multithreaded process does not distinguish.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_sweep_through_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (requirements-cluster.txt)")
    root = str(tmp_path / "ray")
    config = _sweep(backend="ray")
    config.ray.cpus_per_run = 1
    outcomes = sweep.run_sweep(config, root)
    assert sorted(o["status"] for o in outcomes) == ["trained"] * 8
    rows = _csv_after_table(root)
    assert len(rows) == 4 and {r["n"] for r in rows} == {"2"}
    # A second invocation finds every run finished and starts nothing.
    assert sweep.run_sweep(config, root) == []


def test_sweep_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (requirements-cluster.txt)")
    root = str(tmp_path / "submitit")
    config = _sweep(backend="submitit", **{"grid.arch": ("rwkv",), "seeds": (0, 1)})
    config.grid.model.d_model = (8,)
    config.submitit.cluster = "local"
    outcomes = sweep.run_sweep(config, root)
    assert sorted(o["status"] for o in outcomes) == ["trained", "trained"]
    rows = _csv_after_table(root)
    assert len(rows) == 1 and rows[0]["n"] == "2"


def _csv_after_table(root):
    sweep_table.write_table(root)
    return _csv(os.path.join(root, "sweep_table.csv"))
