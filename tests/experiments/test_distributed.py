"""Multi-process training, really run: 2 local processes train like 1.

Two ``run.py train`` processes join with ``jax.distributed.initialize`` on localhost
(CPU, one device each; cross-process collectives over gloo, JAX's CPU default) and
train into one shared workdir, as the hosts of a multi-host run do on a shared
filesystem. Each process feeds only its half of every global batch; the gradient
all-reduce makes the step the full batch's. Meanwhile this process trains the same
config alone, and the two must agree step by step (loss, gradient norm, eval) and in
the final parameters, to float32 reduction-order tolerance. Were the halves trained
apart (no all-reduce), or the wrong rows fed, the losses of step 1 would already
differ (by about 1e-3 relative, against a tolerance of 1e-5).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from configs.synthetic.mqar import get_config
from experiments import config as config_lib
from experiments import train as train_lib
from experiments.checkpoint import Checkpoints
from experiments.logging_utils import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/synthetic/mqar.py:mamba,smoke"
OVERRIDES = {  # 4 steps (smoke), every one logged, eval and checkpoint at the end
    "train.batch_size": 8,
    "train.warmup_steps": 1,  # the full lr from the second step: the parameters move
    "train.log_every": 1,
    "train.tensorboard": False,
}
N_PROCESSES = 2
TIMEOUT_S = 240  # for both; on any failure or timeout both are killed: CI never hangs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(workdir, port: int, process_id: int) -> list[str]:
    flags = {
        **OVERRIDES,
        "distributed.enabled": True,
        "distributed.coordinator_address": f"localhost:{port}",
        "distributed.num_processes": N_PROCESSES,
        "distributed.process_id": process_id,
    }
    return [
        sys.executable,
        os.path.join(ROOT, "run.py"),
        "train",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
        *(f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items()),
    ]


def _start(workdir, logs) -> list[subprocess.Popen]:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    # os.environ carries conftest's XLA_FLAGS and persistent compilation cache.
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}
    port = _free_port()
    procs = []
    for i in range(N_PROCESSES):
        log = open(logs / f"process{i}.log", "w")  # a file: a full pipe would block
        procs.append(
            subprocess.Popen(
                _command(workdir, port, i),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return procs


def _wait(procs, logs) -> None:
    """Until every process has exited, one has failed, or the time is up; then kills the
    rest (a process whose peer died would wait in a collective) and checks the exits."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [proc.poll() for proc in procs]
            if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.1)
    finally:
        _kill(procs)
    failures = []
    for i, proc in enumerate(procs):
        if proc.returncode != 0:
            killed = proc.returncode == -signal.SIGKILL
            status = (
                "was killed (time up, or a peer failed)" if killed else f"exited {proc.returncode}"
            )
            failures.append(
                f"process {i} {status}:\n{(logs / f'process{i}.log').read_text()[-3000:]}"
            )
    assert not failures, "\n".join(failures)


def _kill(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _load_params(directory):
    ckpts = Checkpoints(str(directory), keep=1, read_only=True)
    try:
        return ckpts.load()["params"]
    finally:
        ckpts.close()


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    shared, alone, logs = tmp_path / "two", tmp_path / "one", tmp_path / "logs"
    logs.mkdir()
    procs = _start(shared, logs)
    try:
        # The single-process reference trains here while the two processes run.
        config = config_lib.override(get_config("mamba,smoke"), OVERRIDES)
        train_lib.train(config, str(alone))
        _wait(procs, logs)
    finally:
        _kill(procs)

    one, two = read_metrics(str(alone)), read_metrics(str(shared))
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4, 4]
    for key in ("loss", "accuracy", "grad_norm", "eval_loss", "eval_accuracy"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in two if key in r]
        assert len(a) == len(b) > 0, key
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)

    # One checkpoint directory, written by both processes together, loads in this one
    # process (its arrays were sharded over 2 processes' devices) with the reference's
    # parameters.
    params = [_load_params(d / "checkpoints") for d in (alone, shared)]
    leaves = [jax.tree_util.tree_leaves_with_path(p) for p in params]
    assert [k for k, _ in leaves[0]] == [k for k, _ in leaves[1]]
    for (path, a), (_, b) in zip(*leaves, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    assert (shared / "results.json").exists()  # written once, by process 0
