"""Backbone: input embedding -> stacked blocks -> final norm.

Inputs are token ids (``vocab_size``) or feature vectors (``d_input``, e.g. pixels).
The backbone follows the mixer protocol; its state is a ``BackboneState``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from flax import linen as nn

from arch import params
from arch.blocks import Block, BlockState, make_norm
from arch.validate import check_inputs


class BackboneState(NamedTuple):
    pos: jnp.ndarray  # int32 scalar: tokens consumed so far (learned positions index it)
    layers: tuple[BlockState, ...]  # one per block


class Backbone(nn.Module):
    mixer_factory: Callable[..., nn.Module]
    channel_factory: Callable[..., nn.Module] | None
    d_model: int
    n_layers: int
    vocab_size: int | None = None
    d_input: int | None = None
    norm: str = "layer"
    norm_eps: float = 1e-5
    prenorm: bool = True
    dropout: float = 0.0
    embed_norm: bool = False  # RWKV normalises the embedding once (ln0)
    embed_init: Callable | None = None  # token embedding init; None: N(0, 0.02)
    final_norm: bool = True
    pos_emb: str = "none"  # "learned": absolute positions added to the embedding
    max_len: int = 2048

    def param_rules(self) -> dict:
        """Learned positions are not weight-decayed, like the embedding."""
        return {"positions": params.NO_DECAY} if self.pos_emb == "learned" else {}

    def setup(self):
        if (self.vocab_size is None) == (self.d_input is None):
            raise ValueError("give exactly one of vocab_size (token ids) or d_input (features)")
        if self.vocab_size is not None:
            self.embedding = nn.Embed(
                self.vocab_size,
                self.d_model,
                embedding_init=self.embed_init or nn.initializers.normal(0.02),
            )
        else:
            self.embedding = nn.Dense(self.d_model)
        if self.pos_emb == "learned":
            self.positions = self.param(
                "positions", nn.initializers.normal(0.02), (self.max_len, self.d_model)
            )
        elif self.pos_emb != "none":
            raise ValueError(f"unknown pos_emb {self.pos_emb!r}; valid: none, learned")
        if self.embed_norm:
            self.norm0 = make_norm(self.norm, self.norm_eps)
        self.blocks = [
            Block(
                mixer_factory=functools.partial(
                    self.mixer_factory, layer_id=i, n_layers=self.n_layers
                ),
                channel_factory=None
                if self.channel_factory is None
                else functools.partial(self.channel_factory, layer_id=i, n_layers=self.n_layers),
                norm=self.norm,
                norm_eps=self.norm_eps,
                prenorm=self.prenorm,
                dropout=self.dropout,
            )
            for i in range(self.n_layers)
        ]
        if self.final_norm:
            self.norm_f = make_norm(self.norm, self.norm_eps)

    def _embed(self, inputs, start, length: int):
        x = self.embedding(inputs)
        if self.pos_emb == "learned":
            x = x + jnp.take(self.positions, start + jnp.arange(length), axis=0)
        if self.embed_norm:
            x = self.norm0(x)
        return x

    def _finish(self, x):
        return self.norm_f(x) if self.final_norm else x

    def _check_length(self, length: int):
        if self.pos_emb == "learned" and length > self.max_len:
            raise ValueError(
                f"sequence length {length} exceeds max_len={self.max_len} of the learned "
                "positions; build the model with a larger max_len or use pos='rope'"
            )

    def __call__(self, inputs, *, train: bool = False, mask=None):
        """``mask``: [B, L], nonzero at real tokens (right padding after them), or None.

        Bidirectional mixers use it so that an example's outputs do not depend on the
        padding that follows it (as the LRA code masks its pad tokens).
        """
        check_inputs(inputs, vocab_size=self.vocab_size, d_input=self.d_input, per_token=False)
        self._check_length(inputs.shape[1])
        x = self._embed(inputs, 0, inputs.shape[1])
        mask = None if mask is None else jnp.asarray(mask).astype(bool)
        for block in self.blocks:
            x = block(x, train=train, mask=mask)
        return self._finish(x)

    def init_state(self, batch_size: int) -> BackboneState:
        return BackboneState(
            pos=jnp.zeros((), jnp.int32),
            layers=tuple(block.init_state(batch_size) for block in self.blocks),
        )

    def step(self, state: BackboneState, inputs_t):
        check_inputs(inputs_t, vocab_size=self.vocab_size, d_input=self.d_input, per_token=True)
        x = self._embed(inputs_t[:, None], state.pos, 1)[:, 0]
        layers = []
        for block, s in zip(self.blocks, state.layers, strict=True):
            s, x = block.step(s, x)
            layers.append(s)
        return BackboneState(state.pos + 1, tuple(layers)), self._finish(x)

    def prefill(self, state: BackboneState, inputs):
        check_inputs(inputs, vocab_size=self.vocab_size, d_input=self.d_input, per_token=False)
        length = inputs.shape[1]
        x = self._embed(inputs, state.pos, length)
        layers = []
        for block, s in zip(self.blocks, state.layers, strict=True):
            s, x = block.prefill(s, x)
            layers.append(s)
        return BackboneState(state.pos + length, tuple(layers)), self._finish(x)
