"""Passkey retrieval (Mohtashami & Jaggi, "Landmark Attention", 2023, appendix), byte level.

One example is ``seq_len + 1`` bytes of text, split into inputs / next-byte targets:

    <filler> The pass key is 71432. Remember it. 71432 is the pass key. <filler>
    What is the pass key? The pass key is 71432
                                          ^^^^^ scored targets

The filler is a repeated neutral passage, cut so that it ends on a sentence; the key
sentence goes in at the sentence boundary nearest to ``depth`` (a fraction of the
filler: 0 = first, 1 = last), or at a uniformly random depth per example when
``depth=None``. The key has ``n_digits`` digits, the first one nonzero. Tokens are
bytes (``spec.vocab_size = 256``); the answer digits are teacher-forced, so greedy
predictions at the scored positions are all right exactly when greedy generation of
the key is. Unscored positions still hold the next byte (the text's own LM targets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from experiments.tasks.base import TaskSpec, check_split, rng_for

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
KEY_SENTENCE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is "


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int32)


def filler_text(n_bytes: int) -> np.ndarray:
    """The last ``n_bytes`` bytes of the repeated filler (so it ends on a sentence)."""
    reps = n_bytes // len(FILLER) + 1
    return _bytes(FILLER * reps)[len(FILLER) * reps - n_bytes :]


def sentence_starts(filler: np.ndarray) -> np.ndarray:
    """Offsets where the key sentence can go without splitting a filler sentence
    (plus 0 and the end, so depths 0 and 1 reach the ends)."""
    after_period = np.flatnonzero((filler[:-2] == ord(".")) & (filler[1:-1] == ord(" "))) + 2
    return np.unique(np.concatenate([[0], after_period, [len(filler)]]))


@dataclasses.dataclass(frozen=True)
class Passkey:
    seq_len: int = 1024
    n_digits: int = 5
    depth: float | None = None
    n_eval_steps: int = 8

    def __post_init__(self):
        if self.n_digits < 1:
            raise ValueError(f"n_digits={self.n_digits} must be at least 1")
        if self.depth is not None and not 0.0 <= self.depth <= 1.0:
            raise ValueError(f"depth={self.depth} must be a fraction in [0, 1], or None (random)")
        if self.filler_len < 0:
            raise ValueError(
                f"seq_len={self.seq_len} cannot hold the key sentence, question and answer of a "
                f"{self.n_digits}-digit key; use seq_len >= {self.seq_len - self.filler_len}"
            )
        if self.n_eval_steps < 1:
            raise ValueError(f"n_eval_steps={self.n_eval_steps} must be at least 1")

    @property
    def key_len(self) -> int:
        return len(KEY_SENTENCE.format(key="0" * self.n_digits))

    @property
    def filler_len(self) -> int:
        fixed = self.key_len + len(QUESTION) + self.n_digits
        return self.seq_len + 1 - fixed

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec("passkey", "lm", self.seq_len, vocab_size=256)

    def eval_steps(self, split: str, batch_size: int) -> int:
        check_split(split)
        return self.n_eval_steps

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        check_split(split)
        rng = rng_for(seed, split, step)
        n, n_filler, n_key = self.n_digits, self.filler_len, self.key_len

        first = rng.integers(1, 10, size=(batch_size, 1))
        digits = np.concatenate([first, rng.integers(0, 10, size=(batch_size, n - 1))], axis=1)
        digit_bytes = (ord("0") + digits).astype(np.int32)

        # The key sentence, one row per example: the template with its digits filled in.
        template = _bytes(KEY_SENTENCE.format(key="#" * n))
        slots = np.flatnonzero(template == ord("#")).reshape(2, n)
        key_rows = np.tile(template, (batch_size, 1))
        key_rows[:, slots[0]] = digit_bytes
        key_rows[:, slots[1]] = digit_bytes

        filler = filler_text(n_filler)
        starts = sentence_starts(filler)
        depth = rng.random(batch_size) if self.depth is None else np.full(batch_size, self.depth)
        nearest = np.abs(starts[None, :] - depth[:, None] * n_filler).argmin(axis=1)
        offset = starts[nearest][:, None]

        # body[b, j] = filler before the offset, then the key sentence, then the rest.
        j = np.arange(n_filler + n_key)[None, :]
        rel = j - offset
        in_key = (rel >= 0) & (rel < n_key)
        filler_idx = np.where(j < offset, j, j - n_key).clip(0, max(n_filler - 1, 0))
        padded_filler = np.append(filler, 0)  # one spare byte so an empty filler still indexes
        from_key = np.take_along_axis(key_rows, rel.clip(0, n_key - 1), axis=1)
        body = np.where(in_key, from_key, padded_filler[filler_idx])

        question = np.tile(_bytes(QUESTION), (batch_size, 1))
        text = np.concatenate([body, question, digit_bytes], axis=1)
        loss_mask = np.zeros((batch_size, self.seq_len), dtype=np.float32)
        loss_mask[:, -n:] = 1.0
        return {
            "inputs": text[:, :-1].astype(np.int32),
            "targets": text[:, 1:].astype(np.int32),
            "loss_mask": loss_mask,
        }


def passkey_accuracy_grid(
    predict_digits: Callable[[np.ndarray], np.ndarray],
    lengths: Sequence[int],
    depths: Sequence[float],
    n_examples: int,
    seed: int,
    *,
    n_digits: int = 5,
    batch_size: int | None = None,
) -> dict[tuple[int, float], float]:
    """Exact-match accuracy of the key, per (length, depth) cell.

    ``predict_digits(inputs[B, L]) -> [B, n_digits]`` returns the greedy byte predictions
    at the scored positions (the last ``n_digits`` of the sequence). Examples come from
    the "test" split; every cell of one seed sees the same keys.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples={n_examples} must be at least 1")
    batch_size = n_examples if batch_size is None else batch_size
    grid = {}
    for length in lengths:
        for depth in depths:
            task = Passkey(seq_len=int(length), n_digits=n_digits, depth=float(depth))
            correct = 0
            for step, start in enumerate(range(0, n_examples, batch_size)):
                size = min(batch_size, n_examples - start)
                batch = task.batch("test", step, size, seed)
                answer = batch["targets"][:, -n_digits:]
                predicted = np.asarray(predict_digits(batch["inputs"]))
                if predicted.shape != answer.shape:
                    raise ValueError(
                        f"predict_digits returned shape {predicted.shape}; expected "
                        f"{answer.shape} (batch, n_digits)"
                    )
                correct += int(np.all(predicted == answer, axis=1).sum())
            grid[(int(length), float(depth))] = correct / n_examples
    return grid


def plot_passkey_grid(grid: dict[tuple[int, float], float], path: str) -> None:
    """Heat map of a ``passkey_accuracy_grid`` result (x: length, y: depth) saved as PNG."""
    from matplotlib.figure import Figure  # deferred: only plotting needs matplotlib

    lengths = sorted({length for length, _ in grid})
    depths = sorted({depth for _, depth in grid})
    accuracy = np.full((len(depths), len(lengths)), np.nan)
    for (length, depth), value in grid.items():
        accuracy[depths.index(depth), lengths.index(length)] = value

    fig = Figure(figsize=(1.0 + 0.8 * len(lengths), 1.0 + 0.5 * len(depths)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(accuracy, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(length) for length in lengths])
    ax.set_yticks(range(len(depths)), [f"{depth:.2f}" for depth in depths])
    ax.set_xlabel("sequence length (bytes)")
    ax.set_ylabel("key depth")
    for row, col in np.ndindex(accuracy.shape):
        if not np.isnan(accuracy[row, col]):
            ax.text(col, row, f"{accuracy[row, col]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.savefig(path, dpi=100)
