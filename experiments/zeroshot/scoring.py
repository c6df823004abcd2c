"""Continuation log-likelihoods and the metrics lm-evaluation-harness derives from them.

The rules follow lm-eval 0.4.x (``lm_eval/api/model.py`` ``TemplateLM._encode_pair`` and
``lm_eval/api/task.py`` ``MultipleChoiceTask`` / ``process_results``):

- A request is (context, continuation). Trailing whitespace of the context (spaces and
  newlines alike: ``context.rstrip()``) moves to the front of the continuation; the
  concatenation is encoded once and split at the length of the context's own
  encoding, so a merge across the boundary is scored as the continuation's
  (``encode_pair``).
- An empty context becomes the end-of-text token (lm-eval's ``prefix_token_id``), or,
  when the continuation's encoding starts with that token, its first token. A context
  of whitespace only is refused (lm-eval would score it with no context token at all).
- No BOS is added (Pythia, RWKV-4 and Mamba are scored without one).
- Per request: the summed log-probability of the continuation's tokens, and whether
  every one of them is the greedy argmax (``loglikelihood``).
- Multiple choice: acc = argmax of log-likelihood; acc_norm = argmax of log-likelihood
  divided by the choice's length in characters (``multiple_choice``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) by lm-eval's rules (see the module docstring)."""
    if not context:  # lm-eval's loglikelihood: the end-of-text token stands in
        if tokenizer.eos_id is None:
            raise ValueError(
                f"an empty context is scored after the end-of-text token, and tokenizer "
                f"{tokenizer.name!r} has none; use a tokenizer.json with <|endoftext|>"
            )
        ids = tokenizer.encode(continuation)
        if ids and ids[0] == tokenizer.eos_id:  # it starts with one: that is the context
            return ids[:1], _nonempty(ids[1:], context, continuation)
        return [tokenizer.eos_id], _nonempty(ids, context, continuation)
    # Trailing whitespace (spaces, newlines: lm-eval's ``context.rstrip()``) moves over.
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        raise ValueError(
            f"context {context + continuation[:spaces]!r} is whitespace only: give an empty "
            "context (scored after the end-of-text token) or some text"
        )
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return whole[: len(context_ids)], _nonempty(whole[len(context_ids) :], context, continuation)


def _nonempty(ids: list[int], context: str, continuation: str) -> list[int]:
    if not ids:
        raise ValueError(
            f"request ({context!r}, {continuation!r}): the continuation encodes to no tokens"
        )
    return ids


def _power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def loglikelihood(
    model, params, tokenizer, requests: Sequence[tuple[str, str]], *, batch_size: int = 16
) -> list[tuple[float, bool]]:
    """(sum of log p(continuation tokens | everything before), all greedy) per request.

    Each request is one row: context + continuation, right-padded to the batch's
    longest (a causal model's logits at a position never see the padding after it), cut
    to the model's last ``max_len`` tokens as lm-eval does (the continuation kept).
    """
    pairs = [encode_pair(tokenizer, c, x) for c, x in requests]
    return loglikelihood_ids(model, params, pairs, batch_size=batch_size)


def loglikelihood_ids(
    model, params, pairs: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 16
) -> list[tuple[float, bool]]:
    """``loglikelihood`` on (context ids, continuation ids) pairs, already encoded."""
    return RowScorer(model, params).score(pairs, batch_size=batch_size)


class RowScorer:
    """Scores whole rows (context + continuation) in batches with one jitted ``apply``,
    kept so that later calls reuse its compiled shapes."""

    def __init__(self, model, params):
        self.params = params
        self.max_len = model.backbone.max_len
        self._apply = jax.jit(model.apply)

    def score(
        self, pairs: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 16
    ) -> list[tuple[float, bool]]:
        max_len = self.max_len
        for _, continuation in pairs:
            if len(continuation) > max_len:
                raise ValueError(
                    f"a continuation of {len(continuation)} tokens does not fit max_len={max_len}"
                )
        out = []
        for chunk in _batches(pairs, batch_size):
            rows = [(c + x)[-(max_len + 1) :] for c, x in chunk]  # +1: the last id is a target
            # Widths rounded up to 32 (capped at max_len) and the batch to a power of two
            # (empty rows): a few shapes to compile, not one per request length.
            width = min(max_len, -(-(max(len(r) for r in rows) - 1) // 32) * 32)
            tokens = np.zeros((_power_of_two(len(rows)), width), np.int32)
            for i, r in enumerate(rows):
                tokens[i, : len(r) - 1] = r[:-1]
            logits = self._apply(self.params, jnp.asarray(tokens))
            logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
            for i, ((_, continuation), r) in enumerate(zip(chunk, rows, strict=True)):
                n = len(continuation)
                positions = np.arange(len(r) - 1 - n, len(r) - 1)  # logits that predict them
                target = np.asarray(continuation)
                scores = logp[i, positions, target]
                greedy = bool(np.all(logp[i, positions].argmax(-1) == target))
                out.append((float(scores.sum()), greedy))
        return out


def multiple_choice(logliks: Sequence[float], choices: Sequence[str], gold: int) -> dict:
    """{"acc", "acc_norm"} of one question: 1.0 where the argmax is the gold choice.

    ``choices`` as the task lists them (lm-eval's ``doc_to_choice``, without the space
    that joins them to the context): acc_norm divides by their length in characters."""
    ll = np.asarray(logliks, np.float64)
    lengths = np.asarray([float(len(c)) for c in choices])
    return {
        "acc": float(np.argmax(ll) == gold),
        "acc_norm": float(np.argmax(ll / lengths) == gold),
    }
