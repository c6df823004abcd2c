"""Multi-head softmax attention (Vaswani et al. 2017, "Attention Is All You Need") with
rotary positions (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding") and a KV cache.

Glossary (code -> paper):

- ``d_model`` = d_model; ``n_heads`` = h; ``head_dim`` = d_k = d_v = ``qkv_dim`` / h
  (Section 3.2.2; ``qkv_dim`` defaults to d_model, the LRA configs set it apart);
- ``qkv``: W^Q, W^K, W^V of every head as one Dense(3 qkv_dim); ``out`` = W^O
  (Section 3.2.2, MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O);
- ``K.attention`` = softmax(Q K^T / sqrt(d_k)) V (eq. 1), with query i seeing keys
  j <= i when causal;
- ``pos="rope"``: q and k rotated by R_{Theta, m} at their position m (RoFormer eq. 34),
  theta_i = ``rope_base``^(-2i / d_r); ``rotary_fraction``: only the first
  d_r = ``rotary_fraction`` * d_k channels of each head rotate, the rest pass through
  (GPT-NeoX's ``rotary_pct``, 0.25 in Pythia: Black et al. 2022, section 2.1; Biderman
  et al. 2023);
- ``KVCache``: the (rotated) keys and values of every position so far, the state.

The recurrent state is a KV cache of fixed size ``max_len``: it holds every past key
and value, so memory and per-token cost grow with the context, unlike the recurrent
architectures (that contrast is one of the results the project measures).

Lengths: ``__call__`` and ``prefill`` raise ``ValueError`` for a chunk longer than
``max_len`` (a static shape). Stepping past ``max_len`` raises when the position is
concrete and gives NaN outputs under ``jit`` (``arch.protocol.within_capacity``), never
finite, wrong ones. Generation loops must stop at ``max_len`` tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import linen as nn

from arch.channel import gpt2_inits
from arch.protocol import require_causal, step_via_prefill, within_capacity
from kernels import attention as K

POS_ENCODINGS = ("rope", "none")
INITS = ("gpt2", "xavier")


class KVCache(NamedTuple):
    """Attention's recurrent state."""

    k: jax.Array  # [B, max_len, heads, head_dim] float32: keys (rotated), zero past pos
    v: jax.Array  # [B, max_len, heads, head_dim] float32: values
    pos: jax.Array  # [] int32: tokens already in the cache (where the next one goes)


def check_heads(d_model: int, n_heads: int) -> None:
    if d_model % n_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; "
            "pick n_heads that divides d_model"
        )


def xavier_per_block(n_blocks: int):
    """Xavier-uniform init of a kernel that stacks ``n_blocks`` projections column-wise.

    Each block gets the fan-out of its own projection, as when q, k and v are separate
    layers (the LRA code's ``DenseGeneral`` per projection), not the fused width.
    """
    xavier = nn.initializers.xavier_uniform()

    def init(key, shape, dtype=jnp.float32):
        keys = jax.random.split(key, n_blocks)
        width = shape[-1] // n_blocks
        return jnp.concatenate([xavier(k, (*shape[:-1], width), dtype) for k in keys], axis=-1)

    return init


def qkv_and_out(
    d_model: int, n_layers: int, qkv_dim: int | None = None, weight_init="gpt2", bias=True
) -> tuple[nn.Dense, nn.Dense]:
    """The q, k, v projection (one Dense(3 qkv_dim)) and the output projection.

    ``weight_init="gpt2"``: N(0, 0.02), the output projection scaled by 1/sqrt(2 * depth)
    because every block adds its output to the residual stream. ``weight_init="xavier"``:
    Xavier-uniform per projection (the LRA Transformer, google-research/long-range-arena
    ``models/transformer/transformer.py``). Call from ``setup``.
    """
    qkv_dim = qkv_dim or d_model
    if weight_init == "xavier":
        w_in, w_out = xavier_per_block(3), nn.initializers.xavier_uniform()
    else:
        w_in, w_out = gpt2_inits(n_layers)
    return (
        nn.Dense(3 * qkv_dim, use_bias=bias, kernel_init=w_in),
        nn.Dense(d_model, use_bias=bias, kernel_init=w_out),
    )


class Attention(nn.Module):
    """Causal or bidirectional multi-head attention.

    Options: ``n_heads`` = h; ``qkv_dim``: the width of q, k and v (None: d_model);
    ``pos``: ``"rope"`` (rotary, base ``rope_base``, on ``rotary_fraction`` of each
    head's channels) or ``"none"`` (positions come from
    the backbone's ``pos_emb``, or nowhere); ``max_len``: the size of the KV cache and
    the longest chunk; ``dropout`` on the output; ``attn_dropout`` on the attention
    probabilities (training only; it takes the "reference" kernel, which materialises
    them); ``weight_init``: "gpt2" or "xavier" (the LRA Transformer, with ``use_bias=False``);
    ``impl``: the ``kernels.attention`` implementation.
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    n_heads: int = 4
    qkv_dim: int | None = None
    pos: str = "rope"
    rope_base: float = 10000.0
    rotary_fraction: float = 1.0
    max_len: int = 2048
    dropout: float = 0.0
    attn_dropout: float = 0.0
    weight_init: str = "gpt2"
    use_bias: bool = True
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        check_heads(self.width, self.n_heads)
        if self.weight_init not in INITS:
            raise ValueError(f"unknown weight_init {self.weight_init!r}; valid: {', '.join(INITS)}")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"attn_dropout={self.attn_dropout!r} must be in [0, 1)")
        if self.pos not in POS_ENCODINGS:
            raise ValueError(f"unknown pos {self.pos!r}; valid: {', '.join(POS_ENCODINGS)}")
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ValueError(f"rotary_fraction={self.rotary_fraction!r} must be in (0, 1]")
        if self.pos == "rope" and (self.rotary_dim % 2 or self.rotary_dim < 2):
            raise ValueError(
                f"pos='rope' rotates an even number >= 2 of channels per head, got "
                f"int(head_dim {self.head_dim} x rotary_fraction {self.rotary_fraction}) = "
                f"{self.rotary_dim}; pick n_heads or rotary_fraction to make it even"
            )
        if self.max_len < 1:
            raise ValueError(f"max_len={self.max_len} must be >= 1")
        if self.impl != "auto" and self.impl not in K.IMPLS:
            raise ValueError(
                f"unknown attention impl {self.impl!r}; valid: auto, {', '.join(K.IMPLS)}"
            )

    @property
    def width(self) -> int:
        """qkv_dim: the width of q, k and v together over the heads."""
        return self.qkv_dim or self.d_model

    @property
    def head_dim(self) -> int:
        return self.width // self.n_heads

    @property
    def rotary_dim(self) -> int:
        """Channels per head that rotate (GPT-NeoX: ``int(head_size * rotary_pct)``)."""
        return int(self.head_dim * self.rotary_fraction)

    def sequence_flops(self, length: int) -> float:
        """Per token: q.k scores and the weighted sum of v, 2 x 2 x width FLOPs per key
        (arch/flops.py). Causal: the (length + 1) / 2 keys a token sees on average, the
        useful half of the square (an implementation that computes the masked half too
        shows lower utilisation)."""
        keys = (length + 1) / 2 if self.causal else length
        return 4.0 * self.width * keys

    # No PARAM_RULES: every parameter is a Dense kernel or bias (Flax's usual rules).
    def setup(self):
        self.qkv, self.out = qkv_and_out(
            self.d_model, self.n_layers, self.width, self.weight_init, self.use_bias
        )
        self.drop = nn.Dropout(self.dropout)

    def _check_length(self, length: int, what: str):
        if length > self.max_len:
            raise ValueError(
                f"Attention.{what}: length {length} exceeds max_len={self.max_len}; "
                "build the layer with a larger max_len"
            )

    def _project(self, x, positions):
        """x -> q, k, v, each (B T heads head_dim), q and k rotated when pos='rope'."""
        qkv = self.qkv(x)  # (B T 3*d_model)
        q, k, v = rearrange(qkv, "b t (three h d) -> three b t h d", three=3, h=self.n_heads)
        if self.pos == "rope":
            q, k = (self._rotate(t, positions) for t in (q, k))
        return q, k, v

    def _rotate(self, t, positions):
        if self.rotary_dim == self.head_dim:
            return K.rope(t, positions, self.rope_base)
        rotated = K.rope(t[..., : self.rotary_dim], positions, self.rope_base)
        return jnp.concatenate([rotated, t[..., self.rotary_dim :]], axis=-1)

    def _output(self, y, train: bool):
        y = self.out(rearrange(y, "b t h d -> b t (h d)"))  # Concat(heads) W^O
        # jax.nn.dot_product_attention has no attention-probability dropout: drop the output.
        return self.drop(y, deterministic=not train)

    def __call__(self, x, *, train: bool = False, mask=None):
        """``mask`` ([B, T] bool, True = real token): padded keys are never attended."""
        length = x.shape[1]
        self._check_length(length, "__call__")
        q, k, v = self._project(x, jnp.arange(length))
        if train and self.attn_dropout > 0.0:
            y = K.attention_reference(
                q,
                k,
                v,
                causal=self.causal,
                mask=K.normalise_mask(mask, q.shape[0], length),
                dropout_rate=self.attn_dropout,
                dropout_rng=self.make_rng("dropout"),
            )
        else:
            y = K.attention(q, k, v, causal=self.causal, mask=mask, impl=self.impl)
        return self._output(y, train)  # y: (B T h dh)

    def init_state(self, batch_size: int) -> KVCache:
        require_causal(self, "init_state")
        cache = jnp.zeros((batch_size, self.max_len, self.n_heads, self.head_dim), jnp.float32)
        return KVCache(k=cache, v=cache, pos=jnp.zeros((), jnp.int32))

    def prefill(self, state: KVCache, x):
        """Write the chunk's keys and values at ``pos``; its queries attend to the cache."""
        require_causal(self, "prefill")
        length = x.shape[1]
        self._check_length(length, "prefill")
        q, k, v = self._project(x, state.pos + jnp.arange(length))
        cache_k, cache_v = K.cache_update(state.k, state.v, k, v, state.pos)
        y = K.attend_cache(q, cache_k, cache_v, state.pos + length, impl=self.impl)
        y = within_capacity(y, state.pos, length, self.max_len, "Attention.prefill/step")
        return KVCache(cache_k, cache_v, state.pos + length), self._output(y, False)

    def step(self, state: KVCache, x_t):
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)
