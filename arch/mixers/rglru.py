"""Griffin/Hawk's recurrent block around the RG-LRU (De et al. 2024, "Griffin: Mixing
Gated Linear Recurrences with Local Attention for Efficient Language Models", Figure 2
and section 2.4; google-deepmind/recurrentgemma, and transformers'
``RecurrentGemmaRecurrentBlock``, against which ``tests/arch/test_rglru.py`` checks it).

Glossary (code -> paper):

- ``d_model`` = D; ``lru_width`` = D_RNN (the recurrence width, default D);
- ``linear_y`` -> the GeLU branch; ``linear_x`` -> the recurrent branch, then the
  temporal ``Conv1D`` of width ``d_conv`` = 4 (``conv_weight``, ``conv_bias``);
- ``input_gate_*`` = W_x, b_x and ``recurrence_gate_*`` = W_a, b_a: block-diagonal,
  ``n_heads`` blocks of D_RNN / n_heads (eqs. 1-2);
- ``a_param``: softplus(a_param) = -log a, a in [0.9, 0.999] at init (Appendix A);
- ``kernels.rglru.rg_lru``: eqs. 3-4; ``linear_out``: the output projection of the
  product of the two branches.

y = GeLU(linear_y(x)); u = RG-LRU(Conv1D(linear_x(x))); out = linear_out(u * y).
The state: the conv's last inputs, h, and the position (the first token of a sequence
resets the recurrence, eq. 4 at t = 0 without the sqrt(1 - a^2) factor).
Initialisation as recurrentgemma's: the projections N(0, 1/D), the output projection
N(0, (2 / n_layers) / D_RNN), the conv N(0, 0.01 / width), the gates N(0, 0.01 /
block width), zero biases.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from arch import params
from arch.mixers.shortconv import causal_conv
from arch.protocol import step_via_prefill
from kernels.rglru import rg_lru

W_INIT_VARIANCE = 0.01  # recurrentgemma's w_init_variance_scale (gates, conv)


class RGLRUState(NamedTuple):
    conv: jnp.ndarray  # [B, d_conv - 1, lru_width]: the last conv inputs
    h: jnp.ndarray  # [B, lru_width] float32: the RG-LRU state
    pos: jnp.ndarray  # [] int32: tokens seen (position 0 resets the recurrence)


def normal(variance: float):
    return nn.initializers.normal(math.sqrt(variance))


def a_param_init(min_rad: float = 0.9, max_rad: float = 0.999):
    """a^2 ~ U(min_rad^2, max_rad^2), stored as softplus^-1(-log a) (recurrentgemma's
    ``rnn_param_init``)."""

    def init(key, shape, dtype=jnp.float32):
        a_sq = jax.random.uniform(key, shape, dtype, min_rad**2 + 1e-8, max_rad**2 + 1e-8)
        return jnp.log(jnp.expm1(-0.5 * jnp.log(a_sq)))  # softplus^-1(-log a)

    return init


class RGLRUBlock(nn.Module):
    """Hawk's temporal-mixing block: gated branch x recurrent branch (conv -> RG-LRU)."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    lru_width: int | None = None
    n_heads: int = 1
    d_conv: int = 4
    impl: str = "auto"

    # a: the decay, no weight decay, like Mamba's A_log and RWKV's time_decay (our
    # choice: the Griffin paper does not say); biases: the usual no-decay convention.
    PARAM_RULES: ClassVar = {
        "a_param": params.NO_DECAY,
        "conv_bias": params.NO_DECAY,
        "input_gate_bias": params.NO_DECAY,
        "recurrence_gate_bias": params.NO_DECAY,
    }

    def __post_init__(self):
        super().__post_init__()
        if self.width % self.n_heads:
            raise ValueError(
                f"RGLRUBlock: lru_width={self.width} is not divisible by n_heads={self.n_heads}"
            )
        if self.d_conv < 1:
            raise ValueError(f"RGLRUBlock: d_conv must be >= 1, got {self.d_conv}")

    @property
    def width(self) -> int:
        return self.lru_width or self.d_model

    def sequence_flops(self, length: int) -> float:
        """Per token and channel: h = a h + sqrt(1 - a^2) (i x), a multiply-add and the
        scaled input (Griffin eq. 4); the gates are weights (arch/flops.py)."""
        return 4.0 * self.width

    def setup(self):
        w, h, k = self.width, self.n_heads, self.d_conv
        block = w // h
        self.linear_y = nn.Dense(w, kernel_init=normal(1.0 / self.d_model))
        self.linear_x = nn.Dense(w, kernel_init=normal(1.0 / self.d_model))
        self.linear_out = nn.Dense(self.d_model, kernel_init=normal(2.0 / self.n_layers / w))
        self.conv_weight = self.param("conv_weight", normal(W_INIT_VARIANCE / k), (k, w))
        self.conv_bias = self.param("conv_bias", nn.initializers.zeros, (w,))
        gate_init = normal(W_INIT_VARIANCE / block)
        self.input_gate_weight = self.param("input_gate_weight", gate_init, (h, block, block))
        self.input_gate_bias = self.param("input_gate_bias", nn.initializers.zeros, (h, block))
        self.recurrence_gate_weight = self.param(
            "recurrence_gate_weight", gate_init, (h, block, block)
        )
        self.recurrence_gate_bias = self.param(
            "recurrence_gate_bias", nn.initializers.zeros, (h, block)
        )
        self.a_param = self.param("a_param", a_param_init(), (w,))

    def _gate(self, x, weight, bias):
        """sigma(x W + b), one [block, block] matrix per head (eqs. 1-2)."""
        heads = x.reshape(*x.shape[:-1], self.n_heads, -1)
        out = jnp.einsum("blhi,hij->blhj", heads, weight) + bias
        return jax.nn.sigmoid(out).reshape(x.shape)

    def prefill(self, state: RGLRUState, x):
        y = nn.gelu(self.linear_y(x), approximate=True)  # recurrentgemma: gelu (tanh)
        conv_state, u = causal_conv(state.conv, self.linear_x(x), self.conv_weight, self.conv_bias)
        input_gate = self._gate(u, self.input_gate_weight, self.input_gate_bias)
        recurrence_gate = self._gate(u, self.recurrence_gate_weight, self.recurrence_gate_bias)
        length = x.shape[1]
        reset = jnp.broadcast_to(state.pos + jnp.arange(length) == 0, x.shape[:2])
        hs, h = rg_lru(
            u, input_gate, recurrence_gate, self.a_param, state.h, reset=reset, impl=self.impl
        )
        out = self.linear_out(hs.astype(x.dtype) * y)
        return RGLRUState(conv_state, h, state.pos + length), out

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> RGLRUState:
        return RGLRUState(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.width), jnp.float32),
            h=jnp.zeros((batch_size, self.width), jnp.float32),
            pos=jnp.zeros((), jnp.int32),
        )

    def step(self, state: RGLRUState, x_t):
        return step_via_prefill(self, state, x_t)
