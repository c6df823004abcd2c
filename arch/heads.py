"""Heads on top of a backbone: language model, sequence classifier, dual encoder."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import linen as nn

from arch.backbone import Backbone

POOLINGS = ("mean", "last", "cls")


def pool(h, mask, how: str):
    """Pool ``h: [B, L, D]`` over valid positions (``mask: [B, L]``, 1 = real token).

    mean: average of the valid positions; last: the last valid position (what a
    causal model has read everything by); cls: position 0 (the backbone's CLS vector
    with ``cls_token=True``, or a CLS token the task put there).
    """
    if how not in POOLINGS:
        raise ValueError(f"unknown pooling {how!r}; valid: {', '.join(POOLINGS)}")
    if mask is None:
        mask = jnp.ones(h.shape[:2], h.dtype)
    mask = mask.astype(h.dtype)
    if how == "mean":
        return (h * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    if how == "last":
        last = jnp.maximum(mask.sum(1).astype(jnp.int32) - 1, 0)
        return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
    return h[:, 0]


class LanguageModel(nn.Module):
    """Next-token logits; ``tie_embeddings`` reuses the embedding matrix as the head."""

    backbone: Backbone
    tie_embeddings: bool = False
    head_init: Callable | None = None  # None: Flax's Dense default

    def setup(self):
        if self.backbone.vocab_size is None:
            raise ValueError("a language model needs token inputs: build it with vocab_size")
        if not self.tie_embeddings:
            init = {} if self.head_init is None else {"kernel_init": self.head_init}
            self.head = nn.Dense(self.backbone.vocab_size, use_bias=False, **init)

    def _logits(self, h):
        if self.tie_embeddings:
            return self.backbone.embedding.attend(h)
        return self.head(h)

    def __call__(self, tokens, *, train: bool = False):
        return self._logits(self.backbone(tokens, train=train))

    def init_state(self, batch_size: int):
        return self.backbone.init_state(batch_size)

    def step(self, state, tokens_t):
        state, h = self.backbone.step(state, tokens_t)
        return state, self._logits(h)

    def prefill(self, state, tokens):
        state, h = self.backbone.prefill(state, tokens)
        return state, self._logits(h)


def _encode(backbone: Backbone, inputs, mask, pooling: str, train: bool):
    h = backbone(inputs, train=train, mask=mask)
    return pool(h, backbone.with_cls(mask), pooling)


class Classifier(nn.Module):
    """Pool the backbone's hidden states over valid positions, then the head.

    ``head_mlp=None``: one linear layer; ``head_mlp=m``: Dense(m) -> ReLU -> Dense
    (the LRA code's ``classifier_head``).
    """

    backbone: Backbone
    n_classes: int
    pooling: str = "mean"
    head_mlp: int | None = None

    def setup(self):
        if self.head_mlp:
            self.hidden = nn.Dense(self.head_mlp)
        self.head = nn.Dense(self.n_classes)

    def __call__(self, inputs, mask=None, *, train: bool = False):
        x = _encode(self.backbone, inputs, mask, self.pooling, train)
        return self.head(nn.relu(self.hidden(x)) if self.head_mlp else x)


class DualEncoder(nn.Module):
    """Two documents through one shared encoder, combined as [u, v, u*v, u-v] (LRA AAN).

    ``head_mlp=None``: Dense(d_model) -> GELU -> Dense; ``head_mlp=m``: Dense(m) ->
    ReLU -> Dense(m/2) -> ReLU -> Dense (the LRA code's ``classifier_head_dual``).
    """

    backbone: Backbone
    n_classes: int
    pooling: str = "mean"
    head_mlp: int | None = None

    def setup(self):
        if self.head_mlp:
            self.hidden = nn.Dense(self.head_mlp)
            self.hidden2 = nn.Dense(max(self.head_mlp // 2, 1))
        else:
            self.hidden = nn.Dense(self.backbone.d_model)
        self.head = nn.Dense(self.n_classes)

    def encode(self, inputs, mask=None, *, train: bool = False):
        return _encode(self.backbone, inputs, mask, self.pooling, train)

    def __call__(self, inputs1, inputs2, mask1=None, mask2=None, *, train: bool = False):
        u = self.encode(inputs1, mask1, train=train)
        v = self.encode(inputs2, mask2, train=train)
        features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
        if self.head_mlp:
            return self.head(nn.relu(self.hidden2(nn.relu(self.hidden(features)))))
        return self.head(nn.gelu(self.hidden(features)))
