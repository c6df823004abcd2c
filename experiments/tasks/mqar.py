"""Multi-query associative recall (MQAR), as defined by Zoology (Arora, Eyuboglu et al.,
"Zoology: Measuring and improving recall in efficient language models", section 3).

One example of length ``seq_len``:

    k1 v1 k2 v2 ... kN vN | filler ... k2 filler ... k1 filler ...
    `-- 2N kv tokens --'   `-- each key queried once, at a power-law gap --'

Keys are drawn without replacement from the lower half of the vocabulary (token 0
excluded: Zoology keeps it as the "empty" token before the filler replaces it), values
from the upper half. The query region (``seq_len - 2N`` tokens) is cut into slots of two
tokens; key i is queried at slot ``gap_i``, the gaps drawn without replacement with
probability proportional to ``gap ** (power_a - 1)`` (gap = 1, 2, ...), so short gaps are
far more likely for ``power_a = 0.01`` (like repeated bigrams in text; ``power_a = 1`` is
uniform). Every other query-region token is uniform over the whole vocabulary, as
Zoology's ``random_non_queries`` does (so it may repeat a key, unscored), or 0 without it.
The loss counts only at query positions, whose target is the paired value.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.tasks.base import TaskSpec, check_split, rng_for


def uniform_without_replacement(
    rng: np.random.Generator, pool: int, rows: int, k: int
) -> np.ndarray:
    """[rows, k] distinct integers in [0, pool) per row, in uniformly random order."""
    if k * k > pool:  # repeats would be common: take the k smallest of random scores
        scores = rng.random((rows, pool))
        top = np.argpartition(scores, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(scores, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)
    # Redrawing whole rows that repeat a value leaves the rows uniform over distinct
    # tuples; with k * k <= pool fewer than half the rows need another draw.
    out = rng.integers(0, pool, size=(rows, k))
    while True:
        ordered = np.sort(out, axis=1)
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeats.any():
            return out
        out[repeats] = rng.integers(0, pool, size=(int(repeats.sum()), k))


def weighted_without_replacement(
    rng: np.random.Generator, log_weights: np.ndarray, rows: int, k: int
) -> np.ndarray:
    """[rows, k] indices into ``log_weights``, each row an ordered weighted sample
    without replacement (Gumbel top-k: the same law as drawing one at a time)."""
    scores = log_weights + rng.gumbel(size=(rows, log_weights.shape[0]))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


@dataclasses.dataclass(frozen=True)
class MQAR:
    vocab_size: int = 8192
    seq_len: int = 64
    num_kv_pairs: int = 4
    power_a: float = 0.01
    random_non_queries: bool = True
    n_eval_steps: int = 8

    def __post_init__(self):
        n, length, vocab = self.num_kv_pairs, self.seq_len, self.vocab_size
        if n < 1:
            raise ValueError(f"num_kv_pairs={n} must be at least 1")
        if 4 * n > length:
            raise ValueError(
                f"seq_len={length} cannot hold num_kv_pairs={n}: the kv pairs take 2*{n} tokens "
                f"and the {n} queries need {n} two-token slots after them; "
                f"use seq_len >= {4 * n} or fewer pairs"
            )
        if vocab // 2 - 1 < n:
            raise ValueError(
                f"vocab_size={vocab} has only {max(vocab // 2 - 1, 0)} keys (tokens "
                f"1..vocab_size//2-1) for num_kv_pairs={n} distinct keys; "
                f"use vocab_size >= {2 * n + 2}"
            )
        if not self.power_a > 0:
            raise ValueError(f"power_a={self.power_a} must be > 0 (1.0 gives uniform gaps)")
        if self.n_eval_steps < 1:
            raise ValueError(f"n_eval_steps={self.n_eval_steps} must be at least 1")

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec("mqar", "lm", self.seq_len, vocab_size=self.vocab_size)

    def eval_steps(self, split: str, batch_size: int) -> int:
        check_split(split)
        return self.n_eval_steps

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        check_split(split)
        rng = rng_for(seed, split, step)
        n, length, vocab = self.num_kv_pairs, self.seq_len, self.vocab_size
        half = vocab // 2
        context = 2 * n
        rows = np.arange(batch_size)[:, None]

        # Keys 1..half-1 and values half..vocab-1, distinct within an example.
        keys = 1 + uniform_without_replacement(rng, half - 1, batch_size, n)
        values = half + uniform_without_replacement(rng, vocab - half, batch_size, n)

        # Zoology's power law over the (seq_len - 2N) // 2 query slots.
        space = (length - context) // 2
        gap = np.arange(1, space + 1, dtype=np.float64)
        log_p = np.log(self.power_a) + (self.power_a - 1) * np.log(gap)
        slots = weighted_without_replacement(rng, log_p, batch_size, n)
        query_pos = context + 2 * slots

        if self.random_non_queries:
            inputs = rng.integers(0, vocab, size=(batch_size, length))
        else:
            inputs = np.zeros((batch_size, length), dtype=np.int64)
        inputs[:, 0:context:2] = keys
        inputs[:, 1:context:2] = values
        inputs[rows, query_pos] = keys

        targets = np.zeros((batch_size, length), dtype=np.int32)
        loss_mask = np.zeros((batch_size, length), dtype=np.float32)
        targets[rows, query_pos] = values
        loss_mask[rows, query_pos] = 1.0
        return {"inputs": inputs.astype(np.int32), "targets": targets, "loss_mask": loss_mask}
