"""Where metrics go: JSON lines (the record tables are built from), TensorBoard, tqdm.

``metrics.jsonl`` has one object per line, ``{"step": s, "name": value, ...}``; eval
metrics carry an ``eval_`` prefix. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Mapping

import jax
import tqdm

METRICS_FILE = "metrics.jsonl"
_warned_no_tensorboard = False


def _jsonable(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
    """Appends metric lines to ``workdir/metrics.jsonl`` and, if wanted, TensorBoard."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.workdir = workdir
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = _tensorboard_writer(workdir) if (tensorboard and self.active) else None

    def truncate_after(self, step: int) -> None:
        """Drop lines past ``step``: a resumed run rewrites what the killed one logged."""
        if not self.active:
            return
        kept = [r for r in read_metrics(self.workdir) if r.get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, float(value), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _import_summary_writer():
    """tensorboardX's SummaryWriter, imported without PyTorch when PyTorch is not loaded yet.

    tensorboardX imports torch (about 5 s) only to recognise torch tensors among the
    values it is given; we give it Python floats. ``None`` in ``sys.modules`` makes that
    optional import fail fast; it is removed again, so a later ``import torch`` works.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
    else:
        sys.modules["torch"] = None
        try:
            from tensorboardX import SummaryWriter
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    return SummaryWriter


def _tensorboard_writer(workdir: str):
    try:
        writer_cls = _import_summary_writer()
    except ImportError:
        global _warned_no_tensorboard
        if _warned_no_tensorboard:
            return None
        _warned_no_tensorboard = True
        warnings.warn(
            "tensorboardX is not installed: metrics go to metrics.jsonl only "
            "(pip install tensorboardX for TensorBoard event files)",
            stacklevel=3,
        )
        return None
    return writer_cls(logdir=os.path.join(workdir, "tensorboard"))


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
    return tqdm.tqdm(
        total=total,
        initial=initial,
        disable=not enabled or jax.process_index() != 0,
        dynamic_ncols=True,
        desc="train",
    )


def format_postfix(metrics: Mapping[str, float]) -> str:
    shown = ("loss", "accuracy", "eval_loss", "eval_accuracy")
    return " ".join(f"{k}={float(metrics[k]):.4g}" for k in shown if k in metrics)
