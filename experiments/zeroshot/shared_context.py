"""Score the choices of a question from one pass over their shared context.

A multiple-choice question asks for log p(choice | context) for every choice, and the
context is usually most of the tokens (HellaSwag's ~100-token story against ~20-token
endings). Scored row by row (``scoring.loglikelihood_ids``) the context is run once per
choice. Here it is run once: ``prefill`` brings the model's state (a recurrent state,
or the Transformer's KV cache) to the end of the context, the state is copied for each
choice, and each choice is a ``prefill`` that continues it. The numbers are the same as
the row-by-row ones (the mixer protocol's prefill continues a state exactly;
``tests/experiments/test_zeroshot_scoring.py`` checks it).

Shapes are kept few so that compiling does not dominate: a context of n tokens is
prefilled in pieces of 512, 64, 8 and 1 tokens (``generate.prefill_pieces``: 300 = 4 x
64 + 5 x 8 + 4), four shapes in all; the choices are right-padded to a power of two tokens
(at least 8; a causal model's output at a position never sees the padding after it,
and the copied state is dropped afterwards) and their number to a multiple of 4 (empty
rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.generate import prefill_pieces

MIN_WIDTH = 8
ROWS_MULTIPLE = 4


class SharedContextScorer:
    """``score(context_ids, [continuation_ids, ...]) -> [(loglik, greedy), ...]``."""

    def __init__(self, model, params):
        self.model, self.params = model, params
        self.max_len = model.backbone.max_len
        self._prefill = jax.jit(lambda p, s, t: model.apply(p, s, t, method="prefill"))
        self._init = jax.jit(lambda p: model.apply(p, 1, method="init_state"))
        batch_axes = _batch_axes(model, params)

        def choices(p, state, tokens):  # the context's state copied for every row
            rows = tokens.shape[0]
            state = jax.tree_util.tree_map(
                lambda a, tile: jnp.repeat(a, rows, axis=0) if tile else a, state, batch_axes
            )
            return model.apply(p, state, tokens, method="prefill")[1]

        self._choices = jax.jit(choices)

    def fits(self, context: Sequence[int], continuations: Sequence[Sequence[int]]) -> bool:
        """Whether the context and the padded choices fit a Transformer's KV cache (the
        row-by-row scorer handles the rest, truncating as lm-eval does)."""
        width = _width(max(len(c) for c in continuations))
        return len(context) >= 1 and len(context) + width <= self.max_len

    def score(self, context: Sequence[int], continuations: Sequence[Sequence[int]]):
        if not self.fits(context, continuations):
            raise ValueError(
                f"context of {len(context)} tokens plus choices do not fit max_len="
                f"{self.max_len}; score these rows with scoring.loglikelihood_ids"
            )
        state = self._init(self.params)
        start = 0
        for piece in prefill_pieces(len(context)):
            chunk = jnp.asarray([context[start : start + piece]], jnp.int32)
            state, logits = self._prefill(self.params, state, chunk)
            start += piece
        first = np.asarray(jax.nn.log_softmax(logits[0, -1]))  # predicts each choice's token 0
        rows = -(-len(continuations) // ROWS_MULTIPLE) * ROWS_MULTIPLE
        tokens = np.zeros((rows, _width(max(len(c) for c in continuations))), np.int32)
        for i, c in enumerate(continuations):
            tokens[i, : len(c)] = c
        logits = self._choices(self.params, state, jnp.asarray(tokens))
        rest = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        out = []
        for i, c in enumerate(continuations):
            target = np.asarray(c)
            logp = np.concatenate([first[None], rest[i, : len(c) - 1]])  # [len(c), vocab]
            scores = logp[np.arange(len(c)), target]
            out.append((float(scores.sum()), bool(np.all(logp.argmax(-1) == target))))
        return out


def _width(n: int) -> int:
    """Choices padded to a power of two tokens, at least ``MIN_WIDTH``."""
    return max(MIN_WIDTH, 1 << (n - 1).bit_length())


def _batch_axes(model, params):
    """Per state leaf: True where axis 0 is the batch (it grows with the batch size);
    positions (``pos``) are shared scalars and stay as they are."""

    def shapes(batch):
        return jax.eval_shape(lambda p: model.apply(p, batch, method="init_state"), params)

    return jax.tree_util.tree_map(
        lambda a, b: a.ndim > 0 and a.shape[0] == 1 and b.shape[0] == 2, shapes(1), shapes(2)
    )
