"""Data parallelism: 4 (simulated CPU) devices train exactly like one.

The runs happen in a subprocess, because the host device count is fixed when JAX
starts (``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = """
import json, sys
import jax
from experiments import parallel, train as train_lib
from experiments.logging_utils import read_metrics
from tests.experiments.test_train import TinyModel, TinyTask, tiny_config

workdir = sys.argv[1]
out = {"devices": jax.device_count()}
config = {"train.steps": 6, "train.batch_size": 8, "train.log_every": 1, "train.eval_every": 3}
for n in (1, 4):
    cfg = tiny_config(**config, **{"mesh.data": n})
    train_lib.train(cfg, f"{workdir}/{n}", model=TinyModel("classify", True),
                    task=TinyTask("classify", True))
    out[n] = read_metrics(f"{workdir}/{n}")

batch = TinyTask().batch("train", 0, 8, 0)
sharded = parallel.put_batch(batch, parallel.batch_sharding(parallel.make_mesh(4)))
out["shard_shapes"] = sorted({s.data.shape for s in sharded["inputs"].addressable_shards})
try:
    train_lib.train(tiny_config(**{"train.batch_size": 6}), f"{workdir}/bad",
                    model=TinyModel(), task=TinyTask())
except train_lib.TrainingError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def test_four_devices_follow_the_one_device_trajectory(tmp_path):
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["shard_shapes"] == [[2, 8]]  # 8 rows over 4 devices
    one, four = out["1"], out["4"]
    assert [r["step"] for r in one] == [r["step"] for r in four]
    for key in ("loss", "accuracy", "grad_norm", "eval_loss", "eval_accuracy"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in four if key in r]
        assert len(a) == len(b) > 0, key
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)
    assert "batch_size=6 is not divisible by the 4 data-parallel devices" in out["error"]
