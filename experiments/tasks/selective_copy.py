"""Selective copying (Mamba paper, section 4.1, Figure 2, appendix E.1.1).

One example of length ``seq_len``:

    . . a . . . b . c . . . d . . | * * * *      inputs
                                  | a b c d      targets (scored)

``n_tokens`` data tokens sit at random distinct positions of a context of
``seq_len - n_tokens`` noise ("blank") tokens; then ``n_tokens`` marker tokens follow,
and at the i-th marker the model must emit the i-th data token. Unlike plain copying,
the spacing varies, so a time-invariant model (a fixed convolution) cannot solve it: the
model has to select by content. Tokens: data ``0 .. vocab_size - 1``, blank
``vocab_size``, marker ``vocab_size + 1`` (``spec.vocab_size = vocab_size + 2``).
Unscored positions have target 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.tasks.base import TaskSpec, check_split, rng_for


@dataclasses.dataclass(frozen=True)
class SelectiveCopy:
    vocab_size: int = 16
    seq_len: int = 256
    n_tokens: int = 16
    n_eval_steps: int = 8

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 1 data token")
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens={self.n_tokens} must be at least 1")
        if self.seq_len < 2 * self.n_tokens:
            raise ValueError(
                f"seq_len={self.seq_len} cannot hold n_tokens={self.n_tokens}: the context "
                f"needs {self.n_tokens} positions and the markers {self.n_tokens} more; "
                f"use seq_len >= {2 * self.n_tokens}"
            )
        if self.n_eval_steps < 1:
            raise ValueError(f"n_eval_steps={self.n_eval_steps} must be at least 1")

    @property
    def blank(self) -> int:
        return self.vocab_size

    @property
    def marker(self) -> int:
        return self.vocab_size + 1

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec("selective_copy", "lm", self.seq_len, vocab_size=self.vocab_size + 2)

    def eval_steps(self, split: str, batch_size: int) -> int:
        check_split(split)
        return self.n_eval_steps

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        check_split(split)
        rng = rng_for(seed, split, step)
        n, length = self.n_tokens, self.seq_len
        context = length - n
        rows = np.arange(batch_size)[:, None]

        tokens = rng.integers(0, self.vocab_size, size=(batch_size, n))
        # n distinct positions per row, sorted so the tokens keep their order.
        positions = np.sort(np.argsort(rng.random((batch_size, context)), axis=1)[:, :n], axis=1)

        inputs = np.full((batch_size, length), self.blank, dtype=np.int32)
        inputs[rows, positions] = tokens
        inputs[:, context:] = self.marker

        targets = np.zeros((batch_size, length), dtype=np.int32)
        loss_mask = np.zeros((batch_size, length), dtype=np.float32)
        targets[:, context:] = tokens
        loss_mask[:, context:] = 1.0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}
