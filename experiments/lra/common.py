"""What the LRA tasks share: the missing-data error and batching over a finite split.

Batches are a pure function of (seed, split, step): the training split is shuffled per
epoch by a permutation seeded with (seed, epoch); evaluation walks a split in order and
pads its last batch with examples of weight 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from experiments.tasks.base import check_split

PAD = 0


class DataMissingError(FileNotFoundError):
    """A data set is not where the task looks; the message says how to get it."""


def find_dir(data_dir: str, *candidates: str) -> str | None:
    """The first of ``data_dir/<candidate>`` that exists (release layout or ours)."""
    for rel in candidates:
        path = os.path.join(data_dir, rel)
        if os.path.isdir(path):
            return path
    return None


def pad_to(rows: list[np.ndarray], length: int, dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad (or truncate) 1-D sequences to ``length``; returns (array, mask)."""
    out = np.full((len(rows), length), PAD, dtype)
    mask = np.zeros((len(rows), length), np.float32)
    for i, row in enumerate(rows):
        row = row[:length]
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    return out, mask


def byte_tokens(text: str | bytes) -> np.ndarray:
    """Byte-level tokens 1..256 (0 is padding)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return np.frombuffer(data, np.uint8).astype(np.int32) + 1


class FiniteTask:
    """Batches over in-memory splits ``{split: {name: array[n, ...]}}`` loaded lazily."""

    spec = None  # set by subclasses

    def __init__(self, load: Callable[[str], dict[str, np.ndarray]]):
        self._load = load
        self._splits: dict[str, dict[str, np.ndarray]] = {}

    def split(self, split: str) -> dict[str, np.ndarray]:
        check_split(split)
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return self._splits[split]

    def size(self, split: str) -> int:
        return len(next(iter(self.split(split).values())))

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        data, n = self.split(split), self.size(split)
        positions = step * batch_size + np.arange(batch_size)
        if split == "train":
            epochs = positions // n
            index = np.empty(batch_size, np.int64)
            for epoch in np.unique(epochs):
                perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
                sel = epochs == epoch
                index[sel] = perm[positions[sel] % n]
            weight = np.ones(batch_size, np.float32)
        else:
            index = positions % n
            weight = (positions < n).astype(np.float32)
        out = {k: v[index] for k, v in data.items()}
        out["weight"] = weight
        return out

    def eval_steps(self, split: str, batch_size: int) -> int:
        return math.ceil(self.size(split) / batch_size)
