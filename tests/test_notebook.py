"""Every notebook runs top to bottom at tiny size (``NOTEBOOK_SMOKE=1``) and its .ipynb
matches the .py it is paired with (jupytext)."""

import json
import os

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is a dev requirement")
nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev requirement")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
# name -> what its outputs must show (each family notebook also checks its own
# assertions: written-out recurrence == kernels, parallel == recurrent).
EXPECTED = {
    "new_cell": ["max |parallel - recurrent|"],
    "mamba2_ssd": [
        "max |recurrence - dual|",
        "ssd(chunked) - NumPy loop",
        "max |parallel - recurrent|",
    ],
    "rwkv6": ["wkv6(chunked) - NumPy loop", "max |parallel - recurrent|"],
    "s5": ["s5_scan(associative) - NumPy loop", "max |parallel - recurrent|"],
    "hawk_rglru": [
        "rg_lru(associative) - NumPy loop",
        "std of h with the factor",
        "max |parallel - recurrent|",
    ],
    "moe": ["max |layer - NumPy|", "sown auxiliary loss", "busiest expert's share"],
}
# The family notebooks: name -> the arch of their training run (its run directory's name).
FAMILY_ARCH = {
    "mamba2_ssd": "mamba2",
    "rwkv6": "rwkv6",
    "s5": "s5",
    "hawk_rglru": "hawk",
    "moe": "moe_mamba",
}


def test_every_notebook_is_listed():
    found = {f[:-3] for f in os.listdir(NOTEBOOKS) if f.endswith(".py")}
    assert found == set(EXPECTED), "add the notebook (and what it must print) to EXPECTED"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paired_notebook_is_in_sync(name):
    source = [c.source for c in jupytext.read(os.path.join(NOTEBOOKS, f"{name}.py")).cells]
    paired = [c.source for c in jupytext.read(os.path.join(NOTEBOOKS, f"{name}.ipynb")).cells]
    assert paired == source, f"run: jupytext --sync notebooks/{name}.py"


def _execute(name, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = jupytext.read(os.path.join(NOTEBOOKS, f"{name}.py"))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    )
    client.execute()  # a failing cell (its own asserts included) raises CellExecutionError
    outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    for marker in EXPECTED[name]:
        assert marker in outputs, f"{name}: no {marker!r} in the outputs"
    return outputs


def test_new_cell_notebook_executes(tmp_path, monkeypatch):
    _execute("new_cell", tmp_path, monkeypatch)
    assert os.path.exists(tmp_path / "compare" / "learning_curves.png")
    for name in ("mingru", "s4d"):  # the smoke size compares with S4D only
        with open(tmp_path / "compare" / name / "results.json") as f:
            assert json.load(f)["config"]["arch"] == name
    assert os.path.exists(tmp_path / "bench" / "train_bench.csv")


@pytest.mark.parametrize("name", sorted(FAMILY_ARCH))
def test_family_notebook_executes(name, tmp_path, monkeypatch):
    _execute(name, tmp_path, monkeypatch)
    arch_name = FAMILY_ARCH[name]
    with open(tmp_path / arch_name / "results.json") as f:
        results = json.load(f)
    assert results["config"]["arch"] == arch_name
    assert results["steps"] == 4 and results["final"]["loss"] > 0
    assert os.path.getsize(tmp_path / "curve.png") > 1000  # the training curve was drawn
