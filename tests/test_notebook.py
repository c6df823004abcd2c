"""The new-cell notebook runs top to bottom (tiny size) and its .ipynb matches the .py."""

import json
import os

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is a dev requirement")
nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev requirement")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "notebooks", "new_cell.py")
PAIRED = os.path.join(ROOT, "notebooks", "new_cell.ipynb")


def test_paired_notebook_is_in_sync():
    source = [c.source for c in jupytext.read(SOURCE).cells]
    paired = [c.source for c in jupytext.read(PAIRED).cells]
    assert paired == source, "run: jupytext --sync notebooks/new_cell.py"


def test_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = jupytext.read(SOURCE)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    )
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "max |parallel - recurrent|" in outputs
    assert os.path.exists(tmp_path / "compare" / "learning_curves.png")
    for name in ("mingru", "s4d"):  # the smoke size compares with S4D only
        with open(tmp_path / "compare" / name / "results.json") as f:
            assert json.load(f)["config"]["arch"] == name
    assert os.path.exists(tmp_path / "bench" / "train_bench.csv")
