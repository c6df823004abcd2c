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
    lines = [
        {"step": 10, "loss": 2.0, "step_time": 0.6},
        {"step": 10, "eval_loss": 2.0, "eval_accuracy": 0.2},
        {"step": 30, "loss": 1.0, "step_time": 1.5},
        {"step": 30, "eval_loss": 1.5, "eval_accuracy": best["eval_accuracy"]},
    ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines))


def test_table_scores_test_accuracy_of_the_run_chosen_on_validation(tmp_path):
    runs = tmp_path / "runs"
    # Of two runs, the one better on validation counts, though its test number is lower.
    _run(runs, "s4_a", "s4", "listops", {"eval_accuracy": 0.9, "test_accuracy": 0.5})
    _run(runs, "s4_b", "s4", "listops", {"eval_accuracy": 0.6, "test_accuracy": 0.7})
    _run(runs, "s4_text", "s4", "text", {"eval_accuracy": 0.7})  # made without test eval
    # Equal validation accuracy: the lower validation loss wins, and its test number counts.
    _run(runs, "a_tf_old", "transformer", "listops", {"eval_accuracy": 0.3, "eval_loss": 2.0})
    _run(
        runs,
        "tf",
        "transformer",
        "listops",
        {"eval_accuracy": 0.3, "eval_loss": 1.5, "test_accuracy": 0.25},
    )
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
    assert (tmp_path / "out" / "lra_curves.png").stat().st_size > 1000
    panels = lra_table.run_dirs(str(runs))
    assert sorted(panels) == ["ListOps", "Text"]  # the mqar run is not an LRA task
    assert sorted(panels["ListOps"]) == [
        "s4 (s4_a)",
        "s4 (s4_b)",
        "transformer (a_tf_old)",  # read first, then replaced by "tf" (lower val loss)
        "transformer (tf)",
    ]


def test_training_minutes_accumulate_step_time_over_each_logged_interval():
    from experiments.plots import train_minutes

    records = [
        {"step": 30, "loss": 1.0, "step_time": 1.5},  # order on disk does not matter
        {"step": 10, "loss": 2.0, "step_time": 0.6},
        {"step": 10, "eval_accuracy": 0.2},
    ]
    minutes = train_minutes(records)
    assert minutes == {10: pytest.approx(6.0 / 60), 30: pytest.approx((6.0 + 30.0) / 60)}


def test_table_of_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory of runs"):
        lra_table.collect(str(tmp_path / "nope"))
