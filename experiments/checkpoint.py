"""Checkpoints with orbax: the latest few, plus the best by eval loss.

A checkpoint holds the train state (step, params, optimizer state) and a small JSON
record (best eval loss so far, ...). Resuming restores the latest step; one that
fails to load (a corrupt or half-copied directory) is moved aside into
``<directory>/../corrupt_checkpoints`` with a warning, and the one before it is tried.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "eval_loss"


class _QuietUntrackedSaves(logging.Filter):
    """orbax warns on every save without metrics; ours are deliberate (no eval at that step)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietUntrackedSaves())


class CheckpointError(ValueError):
    """No checkpoint in the directory could be restored."""


def _best_metric(metrics: dict) -> float:
    return float(metrics[BEST_METRIC])


class Checkpoints:
    """An orbax ``CheckpointManager`` keeping ``keep`` latest steps and the best one."""

    def __init__(
        self, directory: str, *, keep: int, async_save: bool = True, read_only: bool = False
    ):
        """``read_only``: open for reading (``run.py eval``): nothing is saved, cleaned up
        or moved aside."""
        self.directory = os.path.abspath(directory)
        if read_only:
            if not os.path.isdir(self.directory):
                raise CheckpointError(f"no checkpoint directory {self.directory}")
            self.options = ocp.CheckpointManagerOptions(
                read_only=True, best_fn=_best_metric, best_mode="min"
            )
            self.manager = ocp.CheckpointManager(self.directory, options=self.options)
            return
        self.options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.LatestN(n=keep),
                    policies.BestN(
                        get_metric_fn=_best_metric,
                        reverse=True,  # sorted high to low: the last (kept) one is lowest
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            best_fn=_best_metric,  # also makes orbax store the metrics with each step
            best_mode="min",
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a save that was killed
        )
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=self.options)
        except Exception:  # orbax reads every step's metrics on start: one may be garbage
            self._move_aside_unreadable_metrics()
            self.manager = ocp.CheckpointManager(self.directory, options=self.options)

    def _move_aside_unreadable_metrics(self) -> None:
        probe = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(read_only=True, lightweight_initialize=True),
        )
        for step in probe.all_steps():
            try:
                probe.metrics(step)
            except Exception as error:
                self._warn_moved(step, error, self._move_dir_aside(step))
        probe.close()

    def save(self, step: int, state: Any, record: dict, metrics: dict | None = None) -> None:
        """Save ``state`` (a pytree) and ``record`` (JSON) at ``step``.

        ``metrics`` (with ``eval_loss``) make the step a candidate for "best".
        """
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()},
            force=True,
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """The state and record at ``step``; ``like`` gives structure, dtypes, shardings."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["record"])

    def restore_latest(self, like: Any) -> tuple[int, Any, dict] | None:
        """``(step, state, record)`` of the newest restorable step, or None if there is none.

        A step that fails to restore is moved aside with a warning; if every step
        fails, ``CheckpointError`` says so (with the last error).
        """
        self.manager.wait_until_finished()
        steps = self.steps()
        last_error = None
        for step in reversed(steps):
            try:
                state, record = self.restore(step, like)
            except Exception as error:  # orbax/tensorstore raise many types for bad files
                last_error = error
                self._warn_moved(step, error, self._move_dir_aside(step))
                self.manager.reload()
                continue
            return step, state, record
        if last_error is not None:
            raise CheckpointError(
                f"none of the checkpoints in {self.directory} (steps {steps}) could be "
                f"restored; the last error was: {_first_line(last_error)}. Was the config "
                "changed since they were written? Use a new workdir to start afresh."
            ) from last_error
        return None

    @staticmethod
    def _warn_moved(step: int, error: BaseException, moved: str) -> None:
        warnings.warn(
            f"checkpoint at step {step} could not be restored ({type(error).__name__}: "
            f"{_first_line(error)}); moved it to {moved} and trying the previous one",
            stacklevel=3,
        )

    def _move_dir_aside(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        dst_root = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        dst = os.path.join(dst_root, str(step))
        if jax.process_index() == 0 and os.path.exists(src):
            os.makedirs(dst_root, exist_ok=True)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.move(src, dst)
        return dst

    def load(self, step: int | None = None) -> dict:
        """The raw saved state at ``step`` (default: latest) as nested dicts of arrays.

        No target is needed (evaluation scripts, notebooks): ``load()["params"]``. Arrays
        come back with the shardings they were saved with, or, when those devices are not
        all here (a checkpoint of a multi-host run loaded on one host), replicated over
        ``jax.devices()``.
        """
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        # Without a fallback, orbax refuses a saved sharding over other processes' devices.
        everywhere = NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(fallback_sharding=everywhere)),
        )
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
