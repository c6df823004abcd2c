"""What a task is, for the training loop.

A task is an object with a ``spec`` (a ``TaskSpec``) and

    batch(split, step, batch_size, seed) -> dict[str, np.ndarray]

a *pure function* of its arguments, so that a resumed run sees exactly the batches
an uninterrupted run would have seen. ``split`` is "train", "val" or "test".
Evaluation reads steps ``0 .. eval_steps(split, batch_size) - 1`` of a split.

Batch layouts, by ``spec.kind``:

- "lm": ``inputs`` int32 [B, L], ``targets`` int32 [B, L], ``loss_mask`` float32
  [B, L] (1 where the loss and accuracy count: e.g. MQAR's query positions).
- "classify": ``inputs`` int32 [B, L] (tokens) or float32 [B, L, d_input]
  (features), ``targets`` int32 [B], optional ``mask`` float32 [B, L] (1 = real token).
- "retrieval": ``inputs1``, ``inputs2`` int32 [B, L], ``mask1``, ``mask2`` float32
  [B, L], ``targets`` int32 [B].

Any kind may add ``weight`` float32 [B]: 0 for examples that only pad out the last
evaluation batch of a finite split.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

KINDS = ("lm", "classify", "retrieval")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    seq_len: int
    vocab_size: int | None = None  # token inputs
    d_input: int | None = None  # feature inputs
    n_classes: int | None = None  # classify / retrieval

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; valid: {', '.join(KINDS)}")


class Task(Protocol):
    spec: TaskSpec

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]: ...

    def eval_steps(self, split: str, batch_size: int) -> int: ...

    # Optional: ``eval_metrics(metrics) -> dict`` derives more numbers from the
    # evaluation's loss and accuracy (the lm task: perplexity, bits per byte);
    # ``experiments.train.evaluate`` adds them to what it logs.


def rng_for(seed: int, split: str, step: int) -> np.random.Generator:
    """A generator determined by (seed, split, step) alone."""
    return np.random.default_rng([seed, SPLITS.index(split), step])


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
