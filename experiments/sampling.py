"""How the next token is chosen: pure functions of the logits (``experiments.generate``
runs them inside its jitted prefill and step).

Greedy at temperature 0; otherwise the logits are divided by the temperature, filtered
by top-k, then by top-p (the order of Hugging Face's ``generate``), and sampled with a
key made from ``(seed, position in the sequence, row)`` alone, so a row samples the same
tokens alone or in a batch. ``n_ids`` keeps ids past a tokenizer's vocabulary (a padded
embedding's rows) from ever being chosen.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; ``temperature == 0`` is greedy (the filters unused)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    n_ids: int | None = None  # ids >= n_ids are never chosen (a padded embedding's rows)

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0: greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1 (None: no top-k filter)")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (None: no nucleus filter)")
        if self.n_ids is not None and self.n_ids < 1:
            raise ValueError(f"n_ids={self.n_ids} must be >= 1 (None: every id)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_seed(seed: int) -> int:
    """Keys are made from an int32 seed."""
    if not -(2**31) <= int(seed) < 2**31:
        raise ValueError(f"seed={seed} must fit in 32 bits (-2**31 <= seed < 2**31)")
    return int(seed)


# --- sampling: pure functions of the logits ----------------------------------------------


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """``logits`` with everything below the k-th largest set to -inf (ties at it kept)."""
    k = min(int(k), logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keep the most likely tokens whose probabilities first sum to >= p.

    A token is kept when the mass of the tokens ranked above it is < p, so the most
    likely token is always kept; ties with the last kept logit are kept too.
    """
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    above = jnp.cumsum(probs, axis=-1) - probs
    n_keep = jnp.sum(above < p, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(ordered, n_keep - 1, axis=-1)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def filter_logits(logits: jax.Array, sampling: Sampling) -> jax.Array:
    """Temperature, then top-k, then top-p (the order of Hugging Face's ``generate``)."""
    logits = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k is not None:
        logits = top_k_filter(logits, sampling.top_k)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        logits = top_p_filter(logits, sampling.top_p)
    return logits


def token_keys(seed, position, batch: int) -> jax.Array:
    """One key per row for the token at sequence index ``position``."""
    key = jax.random.fold_in(jax.random.key(seed), position)
    return jax.vmap(lambda row: jax.random.fold_in(key, row))(jnp.arange(batch))


def choose(logits: jax.Array, sampling: Sampling, seed, position) -> jax.Array:
    """The next token of each row, ``logits: [batch, vocab] -> [batch]`` int32."""
    if sampling.n_ids is not None and sampling.n_ids < logits.shape[-1]:
        valid = jnp.arange(logits.shape[-1]) < sampling.n_ids
        logits = jnp.where(valid, logits, -jnp.inf)
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, sampling)
    keys = token_keys(seed, position, logits.shape[0])
    return jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
