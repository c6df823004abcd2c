"""run.py as a user meets it: bad input gives one line and exit status 2, never a trace."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=ROOT):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["frobnicate"], "unknown command 'frobnicate'; valid: compare, train"),
        (["train"], "missing --workdir"),
        (["compare", "--archs", "gpt5"], "unknown architecture(s) gpt5; valid: aft_conv"),
        (["eval", "--workdir", "/nonexistent/run"], "config.json not found"),
        (["table", "lra"], "usage: python run.py table lra|sweep|zeroshot <runs dir>"),
        (["table", "zeroshot", "/nonexistent/zs"], "/nonexistent/zs is not a directory"),
        (["zeroshot", "--workdir", "/tmp/x"], "missing --weights"),
        (
            ["zeroshot", "--weights", "w", "--workdir", "/tmp/x", "--tasks", "boolq"],
            "unknown zero-shot task 'boolq'; valid: lambada_openai, hellaswag",
        ),
        (["generate", "--weights", "/nonexistent/w", "--prompt", "x"], "/nonexistent/w"),
        (["table", "sweep", "/nonexistent/sweep"], "is not a directory; pass the sweep's"),
        (["sweep"], "is a training config; run.py sweep needs a sweep config"),
        (
            ["sweep", "--config", "configs/sweeps/smoke.py", "--config.backend=slurmish"],
            "unknown backend 'slurmish'; valid: local, ray, submitit",
        ),
        (["bench", "throughput", "--batches", "0,4"], "every batch size must be a positive"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_config_key_and_arch_are_refused(tmp_path):
    proc = run(
        "train",
        "--config",
        "configs/synthetic/mqar.py:mamba",
        "--config.train.lrr=1",
        "--workdir",
        str(tmp_path),
    )
    assert proc.returncode != 0
    assert "unknown config key 'train.lrr'; valid at train: b1, b2" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("train", "--config", "configs/synthetic/mqar.py:mambo", "--workdir", str(tmp_path))
    assert proc.returncode != 0
    assert "unknown architecture 'mambo'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("train", "--config", "configs/nothere.py", "--workdir", str(tmp_path))
    assert proc.returncode == 2 and "No such file" in proc.stderr
    assert "Traceback" not in proc.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg=None):\n    return {\n")
    proc = run("train", "--config", str(broken), "--workdir", str(tmp_path))
    assert proc.returncode == 2 and f"{broken}:2:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_train_then_eval_from_the_command_line(tmp_path):
    workdir = str(tmp_path / "run")
    overrides = [
        "--config.train.steps=3",
        "--config.train.eval_every=3",
        "--config.train.eval_steps=1",
        "--config.train.progress=False",
        "--config.model.d_model=16",
        "--config.model.n_layers=1",
        "--config.model.d_state=4",  # a mixer option, not in the config file
    ]
    proc = run(
        "train", "--config", "configs/synthetic/mqar.py:s4d", *overrides, "--workdir", workdir
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["d_state"] == 4
    with open(os.path.join(workdir, "results.json"), "rb") as f:
        results = f.read()
    proc = run("eval", "--workdir", workdir, "--checkpoint", "latest", "--split", "test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test_accuracy" in proc.stdout
    assert os.path.exists(os.path.join(workdir, "eval", "test-step3.json"))
    with open(os.path.join(workdir, "results.json"), "rb") as f:
        assert f.read() == results  # eval trains nothing and rewrites nothing
    proc = run(
        "train", "--config", "configs/synthetic/mqar.py:s4d", *overrides[:-1],
        "--config.model.frobs=2", "--workdir", str(tmp_path / "other"),
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown option(s) frobs; the S4D mixer takes" in proc.stderr
