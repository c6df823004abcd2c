"""Induction heads (Mamba paper, section 4.1 and appendix E.1.2; Olsson et al. 2022).

One example of length ``seq_len``:

    r r r r T x r r r r r r r r T      inputs
                                 x     target of the last position (the only scored one)

Random data tokens, with one special trigger ``T`` followed by a target token ``x``
somewhere, and ``T`` again at the end: the model must recall the token that followed
the trigger's earlier occurrence ("associative recall" of one pair, at any distance).
Tokens: data ``0 .. vocab_size - 1``, trigger ``vocab_size``
(``spec.vocab_size = vocab_size + 1``). Unscored positions have target 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.tasks.base import TaskSpec, check_split, rng_for


@dataclasses.dataclass(frozen=True)
class InductionHeads:
    vocab_size: int = 16
    seq_len: int = 256
    n_eval_steps: int = 8

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 1 data token")
        if self.seq_len < 3:
            raise ValueError(
                f"seq_len={self.seq_len} is too short: the trigger, its target and the final "
                f"trigger need 3 positions; use seq_len >= 3"
            )
        if self.n_eval_steps < 1:
            raise ValueError(f"n_eval_steps={self.n_eval_steps} must be at least 1")

    @property
    def trigger(self) -> int:
        return self.vocab_size

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec("induction_heads", "lm", self.seq_len, vocab_size=self.vocab_size + 1)

    def eval_steps(self, split: str, batch_size: int) -> int:
        check_split(split)
        return self.n_eval_steps

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        check_split(split)
        rng = rng_for(seed, split, step)
        length = self.seq_len
        rows = np.arange(batch_size)

        inputs = rng.integers(0, self.vocab_size, size=(batch_size, length)).astype(np.int32)
        # The first trigger may sit anywhere its target still precedes the final trigger.
        trigger_pos = rng.integers(0, length - 2, size=batch_size)
        inputs[rows, trigger_pos] = self.trigger
        inputs[:, -1] = self.trigger

        targets = np.zeros((batch_size, length), dtype=np.int32)
        loss_mask = np.zeros((batch_size, length), dtype=np.float32)
        targets[:, -1] = inputs[rows, trigger_pos + 1]
        loss_mask[:, -1] = 1.0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}
