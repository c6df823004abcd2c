"""The TensorBoard writer: event files with the scalars, without importing PyTorch."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import os, sys
from experiments.logging_utils import MetricsWriter
writer = MetricsWriter(sys.argv[1])
writer.write(3, {"loss": 1.5, "eval_accuracy": 0.25})
writer.close()
print("torch imported:", "torch" in sys.modules)
import importlib.util
if importlib.util.find_spec("torch") is not None:
    import torch  # still importable afterwards
    print("torch after:", torch.__name__)
"""


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "torch imported: False" in out
    events = [f for f in os.listdir(tmp_path / "tensorboard") if "tfevents" in f]
    assert len(events) == 1
    data = (tmp_path / "tensorboard" / events[0]).read_bytes()
    assert b"loss" in data and b"eval_accuracy" in data
    assert (tmp_path / "metrics.jsonl").read_text().count('"step": 3') == 1
