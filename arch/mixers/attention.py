"""Multi-head softmax attention (Vaswani et al. 2017) with rotary positions and a KV cache.

The recurrent state is a KV cache of fixed size ``max_len``: it holds every past key
and value, so memory and per-token cost grow with the context, unlike the recurrent
architectures (that contrast is one of the results the project measures).

Lengths: ``__call__`` and ``prefill`` raise ``ValueError`` for a chunk longer than
``max_len`` (a static shape). The position inside ``step``/``prefill`` is a traced
value, so running past ``max_len`` cannot be detected at trace time and no checkify
is used: ``dynamic_update_slice`` then clamps the write to the last slots and the
output is wrong. Generation loops must stop at ``max_len`` tokens.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from arch.protocol import require_causal
from kernels import attention as K

POS_ENCODINGS = ("rope", "none")


class Attention(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    n_heads: int = 4
    pos: str = "rope"
    rope_base: float = 10000.0
    max_len: int = 2048
    dropout: float = 0.0
    impl: str = "auto"

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "pick n_heads that divides d_model"
            )
        if self.pos not in POS_ENCODINGS:
            raise ValueError(f"unknown pos {self.pos!r}; valid: {', '.join(POS_ENCODINGS)}")
        if self.pos == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"pos='rope' needs an even head dim, got d_model/n_heads="
                f"{self.d_model // self.n_heads}"
            )
        if self.max_len < 1:
            raise ValueError(f"max_len={self.max_len} must be >= 1")
        if self.impl != "auto" and self.impl not in K.IMPLS:
            raise ValueError(
                f"unknown attention impl {self.impl!r}; valid: auto, {', '.join(K.IMPLS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def setup(self):
        # GPT-2 initialisation: N(0, 0.02), the output projection scaled by 1/sqrt(2 * depth)
        # because every block adds its output to the residual stream.
        self.qkv = nn.Dense(3 * self.d_model, kernel_init=nn.initializers.normal(0.02))
        self.out = nn.Dense(
            self.d_model,
            kernel_init=nn.initializers.normal(0.02 / (2 * self.n_layers) ** 0.5),
        )
        self.drop = nn.Dropout(self.dropout)

    def _check_length(self, length: int, what: str):
        if length > self.max_len:
            raise ValueError(
                f"Attention.{what}: length {length} exceeds max_len={self.max_len}; "
                "build the layer with a larger max_len"
            )

    def _project(self, x, positions):
        """x [B, T, d_model] -> q, k, v [B, T, H, Dh], rotated when pos='rope'."""
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        shape = (*x.shape[:2], self.n_heads, self.head_dim)
        q, k, v = (a.reshape(shape) for a in (q, k, v))
        if self.pos == "rope":
            q = K.rope(q, positions, self.rope_base)
            k = K.rope(k, positions, self.rope_base)
        return q, k, v

    def _output(self, y, train: bool):
        y = self.out(y.reshape(*y.shape[:2], self.d_model))
        # jax.nn.dot_product_attention has no attention-probability dropout: drop the output.
        return self.drop(y, deterministic=not train)

    def __call__(self, x, *, train: bool = False):
        length = x.shape[1]
        self._check_length(length, "__call__")
        q, k, v = self._project(x, jnp.arange(length))
        y = K.attention(q, k, v, causal=self.causal, impl=self.impl)
        return self._output(y, train)

    def init_state(self, batch_size: int):
        require_causal(self, "init_state")
        cache = jnp.zeros((batch_size, self.max_len, self.n_heads, self.head_dim), jnp.float32)
        return {"k": cache, "v": cache, "pos": jnp.zeros((), jnp.int32)}

    def prefill(self, state, x):
        require_causal(self, "prefill")
        length = x.shape[1]
        self._check_length(length, "prefill")
        pos = state["pos"]
        q, k, v = self._project(x, pos + jnp.arange(length))
        cache_k, cache_v = K.cache_update(state["k"], state["v"], k, v, pos)
        y = K.attend_cache(q, cache_k, cache_v, pos + length, impl=self.impl)
        return {"k": cache_k, "v": cache_v, "pos": pos + length}, self._output(y, False)

    def step(self, state, x_t):
        require_causal(self, "step")
        state, y = self.prefill(state, x_t[:, None])
        return state, y[:, 0]
