"""Resuming: a killed run continues exactly; faults stop or recover cleanly."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import train as train_lib
from experiments.checkpoint import Checkpoints
from experiments.logging_utils import read_metrics
from experiments.preemption import Preempted
from tests.experiments.test_train import TinyModel, TinyTask, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESUME_CONFIG = {
    "train.steps": 16,
    "train.log_every": 2,
    "train.eval_every": 8,
    "train.checkpoint_every": 4,
    "train.keep_checkpoints": 2,
}
KILL_AT = 10  # the driver holds at this step's batch while `<workdir>.hold` exists
DRIVER = f"""
import os, sys, time
from experiments.train import train
from tests.experiments.test_train import TinyModel, TinyTask, tiny_config

workdir = sys.argv[1]

class HeldTask(TinyTask):
    def batch(self, split, step, batch_size, seed):
        if split == "train" and step == {KILL_AT}:
            while os.path.exists(workdir + ".hold"):
                open(workdir + ".waiting", "w").close()
                time.sleep(0.02)
        return super().batch(split, step, batch_size, seed)

train(tiny_config(**{RESUME_CONFIG!r}), workdir, model=TinyModel(), task=HeldTask())
"""


def _finished_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def _losses(workdir):
    return [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    killed = str(tmp_path / "killed")
    open(killed + ".hold", "w").close()
    command = [sys.executable, "-c", DRIVER, killed]
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        # The uninterrupted reference, while the driver starts up.
        straight = str(tmp_path / "straight")
        reference = train_lib.train(
            tiny_config(**RESUME_CONFIG), straight, model=TinyModel(), task=TinyTask()
        )
        deadline = time.time() + 120
        while not (os.path.exists(killed + ".waiting") and 8 in _finished_steps(killed)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the driver did not reach the kill point in 120 s"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert not os.path.exists(os.path.join(killed, "results.json"))

    os.remove(killed + ".hold")
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    resumed = train_lib.read_results(killed)
    assert resumed["resumed_from"] == 8 and reference["resumed_from"] is None
    assert _losses(killed) == _losses(straight)  # every logged step, bitwise
    for key in ("loss", "accuracy", "grad_norm", "eval_loss", "eval_accuracy"):
        np.testing.assert_allclose(resumed["final"][key], reference["final"][key], rtol=1e-6)
    assert resumed["best"] == reference["best"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(
        **{"train.steps": 8, "train.log_every": 2, "train.eval_every": 100, "train.lr": 0.1}
    )
    task = TinyTask("classify", features=True, poison_step=3)  # an inf input at step 3
    with pytest.raises(train_lib.TrainingError, match=r"non-finite .* at step 3\b"):
        train_lib.train(config, str(tmp_path), model=TinyModel("classify", True), task=task)
    ckpts = Checkpoints(str(tmp_path / "checkpoints"), keep=2)
    try:
        assert ckpts.steps() == [2]  # the state after step 3 was never saved
        params = ckpts.load(2)["params"]
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    finally:
        ckpts.close()


def _garble(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")


class SignalAt(TinyTask):
    """Sends ``signum`` to this process while fetching the train batch of ``step``."""

    def __init__(self, step, signum=signal.SIGTERM, **kw):
        super().__init__(**kw)
        self.at, self.signum = step, signum

    def batch(self, split, step, batch_size, seed):
        if split == "train" and step == self.at:
            signal.raise_signal(self.signum)
        return super().batch(split, step, batch_size, seed)


def test_corrupt_checkpoints_fall_back_to_the_previous_one(tmp_path):
    model, task = TinyModel(), TinyTask()
    config = tiny_config(**{"train.steps": 8, "train.keep_checkpoints": 3})
    with pytest.raises(Preempted):  # stop after step 6, with checkpoints 2, 4 and 6
        train_lib.train(config, str(tmp_path), model=model, task=SignalAt(5))
    assert _finished_steps(str(tmp_path)) == [2, 4, 6]
    # Orbax reads every step's metrics when it opens the directory (step 6: all files
    # garbled), and a step's arrays only on restore (step 4: its state garbled).
    _garble(tmp_path / "checkpoints" / "6")
    _garble(tmp_path / "checkpoints" / "4" / "state")
    with pytest.warns(UserWarning, match="could not be restored") as caught:
        results = train_lib.train(config, str(tmp_path), model=model, task=task)
    messages = " ".join(str(w.message) for w in caught)
    assert "step 6 could not be restored" in messages
    assert "step 4 could not be restored" in messages
    assert results["resumed_from"] == 2
    assert sorted(os.listdir(tmp_path / "corrupt_checkpoints")) == ["4", "6"]
    assert [s for s, _ in _losses(str(tmp_path))] == [2, 4, 6, 8]  # re-logged once each
    assert _finished_steps(str(tmp_path)) == [4, 6, 8]


def _params(workdir, step):
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    try:
        return ckpts.load(step)["params"]
    finally:
        ckpts.close()


SIGNAL_CONFIG = {**RESUME_CONFIG, "train.steps": 8}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    straight = str(tmp_path_factory.mktemp("straight") / "run")
    config = tiny_config(**SIGNAL_CONFIG)
    return straight, train_lib.train(config, straight, model=TinyModel(), task=TinyTask())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_current_step_and_the_rerun_ends_identical(
    tmp_path, signum, uninterrupted
):
    config = tiny_config(**SIGNAL_CONFIG)
    before = signal.getsignal(signum)
    straight, reference = uninterrupted
    stopped = str(tmp_path / "stopped")
    with pytest.raises(Preempted) as caught:  # the signal arrives during step 5
        train_lib.train(config, stopped, model=TinyModel(), task=SignalAt(4, signum))
    assert caught.value.step == 5 and caught.value.exit_code == 128 + signum
    assert _finished_steps(stopped) == [4, 5]
    assert signal.getsignal(signum) is before  # the previous handler is back
    resumed = train_lib.train(config, stopped, model=TinyModel(), task=TinyTask())
    assert resumed["resumed_from"] == 5
    for a, b in zip(
        jax.tree.leaves(_params(stopped, 8)), jax.tree.leaves(_params(straight, 8)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert resumed["best"] == reference["best"]
    for key in ("eval_loss", "eval_accuracy"):
        assert resumed["final"][key] == reference["final"][key]
