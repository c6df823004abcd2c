"""``run.py eval``: evaluates a saved checkpoint, trains nothing, changes nothing else."""

import hashlib
import os

import pytest

from configs.synthetic import mqar
from experiments import train as train_lib
from experiments.evaluation import EvalError, evaluate_run


def _snapshot(directory):
    out = {}
    for root, _, files in os.walk(directory):
        if os.path.basename(root) == "eval":
            continue
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = mqar.get_config("s4d")
    config.model.d_model, config.model.n_layers = 16, 1
    config.train.steps, config.train.warmup_steps, config.train.log_every = 4, 1, 2
    config.train.eval_every = config.train.checkpoint_every = 2
    config.train.eval_steps, config.train.progress, config.train.tensorboard = 2, False, False
    workdir = str(tmp_path_factory.mktemp("eval") / "run")
    results = train_lib.train(config, workdir)
    return workdir, results


def test_eval_of_the_best_checkpoint_reproduces_its_validation_numbers(run):
    workdir, results = run
    before = _snapshot(workdir)
    out = evaluate_run(workdir)  # best, val
    assert out["checkpoint"] == results["best"]["step"]
    for key in ("eval_loss", "eval_accuracy"):
        assert out["metrics"][key] == pytest.approx(results["best"][key], rel=1e-6)
    assert os.path.basename(out["path"]) == f"val-step{out['checkpoint']}.json"
    again = evaluate_run(workdir)
    assert again["path"].endswith(f"val-step{out['checkpoint']}-2.json")  # kept, not overwritten
    assert again["metrics"] == out["metrics"]
    assert _snapshot(workdir) == before  # checkpoints, config.json, results.json untouched


def test_eval_at_another_length_and_split(run):
    workdir, results = run
    out = evaluate_run(
        workdir, which="latest", split="test", overrides={"task.options.seq_len": 24}
    )
    assert out["checkpoint"] == 4 and set(out["metrics"]) == {"test_loss", "test_accuracy"}
    assert out["overrides"] == {"task.options.seq_len": 24}
    assert os.path.basename(out["path"]) == "test-step4-seq_len=24.json"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"which": "7"}, r"--checkpoint '7': use best, latest or a saved step: 2, 4"),
        ({"split": "train"}, "--split 'train'; valid: val, test"),
        ({"overrides": {"model.d_model": 8}}, "eval can change task options"),
        ({"overrides": {"task.options.frob": 1}}, "frob"),
    ],
)
def test_eval_errors_are_one_line(run, kwargs, message):
    workdir, _ = run
    with pytest.raises((EvalError, ValueError, TypeError), match=message):
        evaluate_run(workdir, **kwargs)


def test_eval_of_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(EvalError, match="config.json not found"):
        evaluate_run(str(tmp_path))
