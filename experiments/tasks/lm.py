"""Language modelling on a prepared corpus (``python run.py data lm``): next-token
prediction over windows of ``seq_len + 1`` tokens.

Training batches are random windows of the ``train`` split (a pure function of seed and
step); evaluation reads a fixed set of consecutive windows of the held-out ``val`` split
(``experiments/lm_data.py`` has both rules). There is one held-out split, so "test" is
"val" (``test_is_val``) as in the LM papers, which report validation perplexity.

The loop's ``eval_loss`` is the mean token NLL in nats over the scored windows;
``eval_metrics`` turns it into perplexity and bits per byte, with the split's bytes per
token from ``meta.json``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from experiments import lm_data
from experiments.tasks.base import TaskSpec, check_split, rng_for

DEFAULT_DATA_DIR = lm_data.default_data_dir(None, None)  # data/lm/stdlib-byte


class LanguageModeling:
    """Options: ``data_dir`` (a prepared directory), ``seq_len``, ``tokenizer`` (None:
    the one the data were prepared with; else it must be that one), ``eval_windows``
    (the most validation windows one evaluation scores; None: all of them)."""

    test_is_val = True

    def __init__(
        self,
        data_dir: str = DEFAULT_DATA_DIR,
        seq_len: int = 256,
        tokenizer: str | None = None,
        eval_windows: int | None = 256,
    ):
        if isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len < 1:
            raise ValueError(f"seq_len={seq_len!r} must be a positive integer")
        if eval_windows is not None and eval_windows < 1:
            raise ValueError(f"eval_windows={eval_windows} must be at least 1 (or None: all)")
        self.data_dir, self.seq_len = str(data_dir), int(seq_len)
        self.tokenizer, self.eval_windows = tokenizer, eval_windows
        # Nothing is read here: a config builds its task before the data exist.

    @functools.cached_property
    def meta(self) -> dict:
        meta = lm_data.read_meta(self.data_dir)
        if self.tokenizer is not None:
            self._check_tokenizer(meta)
        for split in lm_data.SPLITS:
            n = meta["splits"][split]["tokens"]
            if n < self.seq_len + 1:
                raise ValueError(
                    f"the {split} split of {self.data_dir} has {n} tokens, fewer than "
                    f"seq_len + 1 = {self.seq_len + 1}; lower task.options.seq_len or prepare "
                    "a larger corpus"
                )
        return meta

    def _check_tokenizer(self, meta: dict) -> None:
        from experiments.tokenizer import load_tokenizer

        wanted = lm_data.tokenizer_identity(load_tokenizer(self.tokenizer))
        if wanted != meta["request"]["tokenizer"]:
            raise ValueError(
                f"{self.data_dir} was prepared with the tokenizer {meta['tokenizer']['name']}, not "
                f"{self.tokenizer}; prepare the corpus with it into another directory "
                f"(python run.py data lm --tokenizer {self.tokenizer} --data_dir <new dir>) "
                "and train on that"
            )

    @property
    def spec(self) -> TaskSpec:
        vocab = self.meta["tokenizer"]["vocab_size"]
        return TaskSpec("lm", "lm", self.seq_len, vocab_size=vocab)

    @functools.cached_property
    def _tokens(self) -> dict[str, np.ndarray]:
        return {s: lm_data.open_tokens(self.data_dir, s, self.meta) for s in lm_data.SPLITS}

    @functools.cached_property
    def _eval_starts(self) -> np.ndarray:
        n = len(self._tokens["val"])
        return lm_data.eval_window_starts(n, self.seq_len, self.eval_windows)

    def eval_steps(self, split: str, batch_size: int) -> int:
        check_split(split)
        return max(1, math.ceil(len(self._eval_starts) / batch_size))

    def batch(self, split: str, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        check_split(split)
        if split == "train":
            rng = rng_for(seed, split, step)
            windows = lm_data.train_windows(self._tokens["train"], rng, batch_size, self.seq_len)
            extra = {}
        else:  # the fixed validation windows in order; rows past the end weigh 0
            starts = self._eval_starts
            index = step * batch_size + np.arange(batch_size)
            valid = index < len(starts)
            rows = starts[index % len(starts)][:, None] + np.arange(self.seq_len + 1)
            windows = np.asarray(self._tokens["val"][rows], np.int32)
            extra = {"weight": valid.astype(np.float32)}
        return {
            "inputs": windows[:, :-1],
            "targets": windows[:, 1:],
            "loss_mask": np.ones((batch_size, self.seq_len), np.float32),
            **extra,
        }

    def eval_metrics(self, metrics: dict) -> dict[str, float]:
        """``{prefix}_ppl`` and ``{prefix}_bpb`` for each ``eval_loss`` / ``test_loss``
        (mean token NLL in nats over validation windows) in ``metrics``."""
        val = self.meta["splits"]["val"]
        out = {}
        for key, value in metrics.items():
            prefix, _, name = key.rpartition("_")
            if name == "loss" and prefix in ("eval", "test"):
                derived = lm_data.lm_metrics(float(value), val["tokens"], val["bytes"])
                out.update({f"{prefix}_{k}": v for k, v in derived.items()})
        return out
