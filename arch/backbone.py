"""Backbone: input embedding -> stacked blocks -> final norm.

Inputs are token ids (``vocab_size``) or feature vectors (``d_input``, e.g. pixels).
The backbone follows the mixer protocol; its state is a ``BackboneState``.

Options for a classifier's backbone (the LRA Transformer uses all three): ``pos_emb``
absolute positions added to the embedding ("learned", or "sinusoidal": the fixed table
of Vaswani et al. 2017, section 3.5); ``cls_token``: a learned, zero-initialised vector
prepended to every sequence (its output is what ``pooling="cls"`` reads);
``embed_dropout`` after the positions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch import params
from arch.blocks import Block, BlockState, make_norm
from arch.protocol import NoRecurrentFormError
from arch.validate import check_inputs

POS_EMBS = ("none", "learned", "sinusoidal")


def sinusoidal_positions(length: int, d_model: int) -> np.ndarray:
    """[length, d_model]: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...).

    Vaswani et al. 2017, section 3.5 (even features sine, odd features cosine, as the
    LRA code's ``sinusoidal_init``).
    """
    position = np.arange(length, dtype=np.float64)[:, None]
    inv_freq = np.exp(np.arange(0, d_model, 2) * -(np.log(10000.0) / d_model))
    table = np.zeros((length, d_model))
    table[:, 0::2] = np.sin(position * inv_freq)
    table[:, 1::2] = np.cos(position * inv_freq[: d_model // 2])
    return table.astype(np.float32)


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
    parallel_residual: bool = False  # GPT-NeoX blocks (arch.blocks.Block)
    dropout: float = 0.0
    embed_norm: bool = False  # RWKV normalises the embedding once (ln0)
    embed_init: Callable | None = None  # token embedding init; None: N(0, 0.02)
    final_norm: bool = True
    pos_emb: str = "none"  # POS_EMBS: absolute positions added to the embedding
    max_len: int = 2048
    cls_token: bool = False  # prepend a learned CLS vector (classification only)
    embed_dropout: float = 0.0

    def param_rules(self) -> dict:
        """Learned positions and the CLS vector are not weight-decayed, like the embedding."""
        rules = {"positions": params.NO_DECAY} if self.pos_emb == "learned" else {}
        return rules | ({"cls": params.NO_DECAY} if self.cls_token else {})

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
        if self.pos_emb not in POS_EMBS:
            raise ValueError(f"unknown pos_emb {self.pos_emb!r}; valid: {', '.join(POS_EMBS)}")
        if self.pos_emb == "learned":
            self.positions = self.param(
                "positions",
                nn.initializers.normal(0.02),
                (self.max_len + int(self.cls_token), self.d_model),
            )
        if self.cls_token:
            self.cls = self.param("cls", nn.initializers.zeros, (self.d_model,))
        self.embed_drop = nn.Dropout(self.embed_dropout)
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
                parallel_residual=self.parallel_residual,
                dropout=self.dropout,
            )
            for i in range(self.n_layers)
        ]
        if self.final_norm:
            self.norm_f = make_norm(self.norm, self.norm_eps)

    def _embed(self, inputs, start, length: int, train: bool = False):
        x = self.embedding(inputs)
        if self.cls_token:  # LRA: the CLS vector goes first, then positions 0..L
            cls = jnp.broadcast_to(self.cls.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
            length += 1
        if self.pos_emb == "learned":
            x = x + jnp.take(self.positions, start + jnp.arange(length), axis=0)
        elif self.pos_emb == "sinusoidal":
            table = jnp.asarray(sinusoidal_positions(self.max_len + 1, self.d_model))
            x = x + jnp.take(table, start + jnp.arange(length), axis=0).astype(x.dtype)
        if self.embed_norm:
            x = self.norm0(x)
        return self.embed_drop(x, deterministic=not train)

    def with_cls(self, mask):
        """The padding mask of the backbone's output (one more position with a CLS)."""
        if mask is None or not self.cls_token:
            return mask
        return jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)

    def _recurrent(self, what: str):
        if self.cls_token:
            raise NoRecurrentFormError(
                f"Backbone.{what}: a backbone with cls_token=True reads whole sequences "
                "(classification); build it without cls_token to step or prefill"
            )

    def _finish(self, x):
        return self.norm_f(x) if self.final_norm else x

    def _check_length(self, length: int):
        if self.pos_emb != "none" and length > self.max_len:
            raise ValueError(
                f"sequence length {length} exceeds max_len={self.max_len} of the "
                f"{self.pos_emb} positions; build the model with a larger max_len"
            )

    def __call__(self, inputs, *, train: bool = False, mask=None):
        """``mask``: [B, L], nonzero at real tokens (right padding after them), or None.

        Bidirectional mixers use it so that an example's outputs do not depend on the
        padding that follows it (as the LRA code masks its pad tokens).
        """
        check_inputs(inputs, vocab_size=self.vocab_size, d_input=self.d_input, per_token=False)
        self._check_length(inputs.shape[1])
        x = self._embed(inputs, 0, inputs.shape[1], train)
        mask = self.with_cls(None if mask is None else jnp.asarray(mask).astype(bool))
        for block in self.blocks:
            x = block(x, train=train, mask=mask)
        return self._finish(x)

    def init_state(self, batch_size: int) -> BackboneState:
        self._recurrent("init_state")
        return BackboneState(
            pos=jnp.zeros((), jnp.int32),
            layers=tuple(block.init_state(batch_size) for block in self.blocks),
        )

    def step(self, state: BackboneState, inputs_t):
        check_inputs(inputs_t, vocab_size=self.vocab_size, d_input=self.d_input, per_token=True)
        self._recurrent("step")
        x = self._embed(inputs_t[:, None], state.pos, 1)[:, 0]
        layers = []
        for block, s in zip(self.blocks, state.layers, strict=True):
            s, x = block.step(s, x)
            layers.append(s)
        return BackboneState(state.pos + 1, tuple(layers)), self._finish(x)

    def prefill(self, state: BackboneState, inputs):
        check_inputs(inputs, vocab_size=self.vocab_size, d_input=self.d_input, per_token=False)
        self._recurrent("prefill")
        length = inputs.shape[1]
        x = self._embed(inputs, state.pos, length)
        layers = []
        for block, s in zip(self.blocks, state.layers, strict=True):
            s, x = block.prefill(s, x)
            layers.append(s)
        return BackboneState(state.pos + length, tuple(layers)), self._finish(x)
