"""``run.py table lra``: scores from results.json files, the published rows, differences."""

import csv
import json

import pytest

from experiments import lra_table


def _run(root, name, arch, task, best):
    folder = root / name
    folder.mkdir(parents=True)
    results = {"config": {"arch": arch, "task": {"name": task}}, "best": best}
    (folder / "results.json").write_text(json.dumps(results))


def test_table_scores_test_accuracy_at_best_and_marks_validation_only_runs(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "s4_a", "s4", "listops", {"eval_accuracy": 0.61, "test_accuracy": 0.5})
    _run(runs, "s4_b", "s4", "listops", {"eval_accuracy": 0.9, "test_accuracy": 0.4})
    _run(runs, "s4_text", "s4", "text", {"eval_accuracy": 0.7})  # made without test eval
    _run(runs, "tf", "transformer", "listops", {"eval_accuracy": 0.3, "test_accuracy": 0.25})
    _run(runs, "other", "s4", "mqar", {"eval_accuracy": 1.0})  # not an LRA task: ignored

    scores, on_val = lra_table.collect(str(runs))
    assert scores == {
        "s4": {"listops": pytest.approx(50.0), "text": pytest.approx(70.0)},
        "transformer": {"listops": pytest.approx(25.0)},
    }
    assert on_val == {"s4": {"text"}, "transformer": set()}

    text = lra_table.write_table(str(runs), str(tmp_path / "out"))
    assert "validation acc. for Text" in text
    with open(tmp_path / "out" / "lra_table.csv") as f:
        table = {row["model"]: row for row in csv.DictReader(f)}
    published_s4 = lra_table.PUBLISHED["S4 (latest)"][0]
    assert float(table["s4 (ours)"]["ListOps"]) == pytest.approx(50.0)
    assert float(table["  vs S4 (latest)"]["ListOps"]) == pytest.approx(50.0 - published_s4[0])
    assert float(table["  vs S4 (latest)"]["Text"]) == pytest.approx(70.0 - published_s4[1])
    assert table["  vs S4 (latest)"]["Image"] == ""  # no run: no difference
    assert table["transformer (ours)"]["source"] == "this repo (test acc.)"
    assert float(table["Transformer"]["ListOps"]) == pytest.approx(36.37)


def test_table_of_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory of runs"):
        lra_table.collect(str(tmp_path / "nope"))
