"""The run-directory contract: finished work is never moved, overwritten or deleted."""

import hashlib
import json
import os

import pytest

from experiments import rundir
from experiments import train as train_lib
from tests.experiments.test_train import TinyModel, TinyTask, tiny_config


def _snapshot(directory):
    """{relative path: sha256} of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    results = train_lib.train(tiny_config(), workdir, model=TinyModel(), task=TinyTask())
    return workdir, results


def test_rerunning_a_finished_run_changes_nothing(finished):
    workdir, results = finished
    before = _snapshot(workdir)
    again = train_lib.train(tiny_config(), workdir, model=TinyModel(), task=TinyTask())
    assert again == json.loads(json.dumps(results, default=str))
    assert _snapshot(workdir) == before


@pytest.mark.parametrize(
    "change, shown",
    [
        ({"train.seed": 1}, "train.seed: 0 -> 1"),
        ({"model.d_model": 32}, "model.d_model: 64 -> 32"),
        ({"train.lr": 0.5, "train.steps": 6}, "train.lr: 0.001 -> 0.5; train.steps: 4 -> 6"),
    ],
)
def test_a_changed_config_stops_before_touching_anything(finished, change, shown):
    workdir, _ = finished
    before = _snapshot(workdir)
    with pytest.raises(train_lib.TrainingError) as caught:
        train_lib.train(tiny_config(**change), workdir, model=TinyModel(), task=TinyTask())
    message = str(caught.value)
    assert shown in message
    assert "Use a new --workdir, or add --config.train.resume=False" in message
    assert _snapshot(workdir) == before  # byte-identical, nothing moved aside


def test_a_run_written_before_a_new_schema_field_still_resumes(tmp_path):
    """config.json from older code lacks fields added since (e.g. train.schedule): at
    their defaults they are what that code computed, so the run resumes; set otherwise,
    they are a change."""
    old = tiny_config().to_dict()
    del old["train"]["schedule"], old["train"]["eps"]
    assert rundir.differences(old, tiny_config().to_dict()) == []
    changed = rundir.differences(old, tiny_config(**{"train.schedule": "rsqrt"}).to_dict())
    assert changed == [("train.schedule", "(absent)", "rsqrt")]


def test_bookkeeping_fields_may_change_on_resume(finished):
    workdir, results = finished
    config = tiny_config(**{"train.log_every": 1, "train.progress": True})
    assert train_lib.train(config, workdir, model=TinyModel(), task=TinyTask())["steps"] == 4


def test_resume_false_starts_a_new_run_beside_it(finished, capsys):
    workdir, _ = finished
    before = _snapshot(workdir)
    config = tiny_config(**{"train.seed": 3, "train.resume": False})
    results = train_lib.train(config, workdir, model=TinyModel(), task=TinyTask())
    assert f"starting a new one in {workdir}-2" in capsys.readouterr().out
    assert results["config"]["train"]["seed"] == 3
    assert os.path.exists(os.path.join(workdir + "-2", "results.json"))
    assert _snapshot(workdir) == before


def test_unusable_workdirs_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(train_lib.TrainingError, match="is a file, not a directory"):
        train_lib.train(tiny_config(), str(a_file), model=TinyModel(), task=TinyTask())
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(train_lib.TrainingError, match="not writable"):
            train_lib.train(tiny_config(), str(locked), model=TinyModel(), task=TinyTask())


def test_json_is_written_atomically(tmp_path, monkeypatch):
    path = str(tmp_path / "results.json")
    rundir.write_json(path, {"a": 1})

    def broken_dump(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        rundir.write_json(path, {"a": 2})
    assert json.loads(open(path).read()) == {"a": 1}  # the old file, whole
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary left behind
