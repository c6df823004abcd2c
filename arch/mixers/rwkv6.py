"""RWKV-6 (Finch) time mixing (Peng et al. 2024, "Eagle and Finch: RWKV with
Matrix-Valued States and Dynamic Recurrence", section 4; BlinkDL/RWKV-LM
``RWKV-v5/src/model.py`` ``RWKV_Tmix_x060``, read at 524481d).

Glossary (code -> paper):

- ``time_maa_x``, ``time_maa_{w,k,v,r,g}`` = mu: the token shift, now data-dependent:
  ddlerp(a, b) = a + (b - a) * (mu + lora(a + (b - a) * mu_x)) (eqs. 11-12), the five
  LoRAs sharing ``time_maa_w1`` [D, 5 * 32] and each with its ``time_maa_w2`` [32, D];
- ``receptance``, ``key``, ``value``, ``gate``, ``output`` = W_r, W_k, W_v, W_g, W_o;
- ``time_decay`` = w plus its LoRA (``time_decay_w1``, ``time_decay_w2``): the decay is
  data-dependent, w_t = exp(-exp(time_decay + lora(x_w))) (eq. 16);
- ``time_faaaa`` = u, the bonus of the current token, per head and channel;
- ``kernels.wkv6.wkv6``: the matrix-valued recurrence per head of ``head_size``
  (eqs. 19-20); ``ln_x``: GroupNorm with one group per head, then times SiLU(g) (eq. 21).

The state: the last input (token shift) and the [head_size, head_size] WKV state of
every head. Initialisation and optimizer groups as RWKV-LM (``__init__``,
``generate_init_weight``, ``configure_optimizers``).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import linen as nn

from arch import params
from arch.mixers.rwkv import _const, _ratios, _shift, orthogonal
from arch.protocol import step_via_prefill
from kernels.wkv6 import wkv6

MIX_LORA, DECAY_LORA = 32, 64  # D_MIX_LORA, D_DECAY_LORA in RWKV-LM
HEAD_SIZE_DIVISOR = 8  # ln_x eps = 1e-5 * divisor^2


class RWKV6State(NamedTuple):
    shift: jnp.ndarray  # [B, d_model] float32: x_{t-1}
    wkv: jnp.ndarray  # [B, heads, head_size, head_size] float32: S


def _uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


# RWKV-LM configure_optimizers (layerwise_lr, my_pile_stage != 2): time_decay at 2x, the
# token-shift mixes, the LoRAs and u at 1x; none of them weight-decayed.
_RULES = {
    "time_decay": params.ParamRule(lr_mult=2.0, wd_mult=0.0),
    "time_faaaa": params.NO_DECAY,
    **{f"time_maa_{n}": params.NO_DECAY for n in ("x", "w", "k", "v", "r", "g", "w1", "w2")},
    "time_decay_w1": params.NO_DECAY,
    "time_decay_w2": params.NO_DECAY,
}


class RWKV6TimeMix(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    head_size: int | None = None  # None: 64 (RWKV-LM's head_size_a), or d_model if smaller
    impl: str = "auto"

    PARAM_RULES: ClassVar = _RULES

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n:
            raise ValueError(
                f"RWKV6: d_model={self.d_model} is not divisible by head_size={self.n}"
            )
        if self.n_layers < 1 or not 0 <= self.layer_id < self.n_layers:
            raise ValueError(
                f"RWKV6: need 0 <= layer_id < n_layers, got {self.layer_id}, {self.n_layers}"
            )

    @property
    def n(self) -> int:
        """The head size N."""
        return self.head_size or min(64, self.d_model)

    @property
    def n_heads(self) -> int:
        return self.d_model // self.n

    def sequence_flops(self, length: int) -> float:
        """Per token and state element (heads x N x N): the input k^T v, the decay
        update, the read-out r S; 2 FLOPs each (arch/flops.py)."""
        return 6.0 * self.d_model * self.n

    def setup(self):
        d = self.d_model
        r01, r10 = _ratios(self.layer_id, self.n_layers)
        ramp = np.arange(d) / d
        maa = lambda power, shift=0.0: _const(1.0 - (ramp**power + shift))  # noqa: E731
        self.time_maa_x = self.param("time_maa_x", maa(r10), (d,))
        self.time_maa_w = self.param("time_maa_w", maa(r10), (d,))
        self.time_maa_k = self.param("time_maa_k", maa(r10), (d,))
        self.time_maa_v = self.param("time_maa_v", maa(r10, 0.3 * r01), (d,))
        self.time_maa_r = self.param("time_maa_r", maa(0.5 * r10), (d,))
        self.time_maa_g = self.param("time_maa_g", maa(0.5 * r10), (d,))
        self.time_maa_w1 = self.param("time_maa_w1", nn.initializers.zeros, (d, 5 * MIX_LORA))
        self.time_maa_w2 = self.param("time_maa_w2", _uniform(0.01), (5, MIX_LORA, d))
        n = np.arange(d) / max(d - 1, 1)
        self.time_decay = self.param("time_decay", _const(-6 + 5 * n ** (0.7 + 1.3 * r01)), (d,))
        self.time_decay_w1 = self.param("time_decay_w1", nn.initializers.zeros, (d, DECAY_LORA))
        self.time_decay_w2 = self.param("time_decay_w2", _uniform(0.01), (DECAY_LORA, d))
        zigzag = ((np.arange(d) + 1) % 3 - 1) * 0.1
        bonus = r01 * (1 - n) + zigzag
        self.time_faaaa = self.param("time_faaaa", _const(bonus), (self.n_heads, self.n))
        # generate_init_weight: key and gate orthogonal x 0.1, output zero, others
        # orthogonal (gain 1 for these square layers).
        self.receptance = nn.Dense(d, use_bias=False, kernel_init=orthogonal())
        self.key = nn.Dense(d, use_bias=False, kernel_init=orthogonal(0.1))
        self.value = nn.Dense(d, use_bias=False, kernel_init=orthogonal())
        self.gate = nn.Dense(d, use_bias=False, kernel_init=orthogonal(0.1))
        self.output = nn.Dense(d, use_bias=False, kernel_init=nn.initializers.zeros)
        layer_scale = ((1 + self.layer_id) / self.n_layers) ** 0.7  # ln_x.weight init
        self.ln_x = nn.GroupNorm(
            num_groups=self.n_heads,
            epsilon=1e-5 * HEAD_SIZE_DIVISOR**2,
            scale_init=nn.initializers.constant(layer_scale),
        )

    def prefill(self, state: RWKV6State, x):
        xx = _shift(state.shift, x) - x  # x_{t-1} - x_t
        lora = jnp.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1)  # [B, L, 5 * 32]
        lora = rearrange(lora, "b l (f r) -> f b l r", f=5)
        mw, mk, mv, mr, mg = jnp.einsum("fblr,frd->fbld", lora, self.time_maa_w2)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = nn.silu(self.gate(xg))
        w = self.time_decay + jnp.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        heads = lambda z: rearrange(z, "b l (h n) -> b l h n", n=self.n)  # noqa: E731
        y, s = wkv6(
            heads(r), heads(k), heads(v), heads(-jnp.exp(w.astype(jnp.float32))),
            self.time_faaaa, state.wkv, impl=self.impl,
        )  # fmt: skip
        # ln_x per token (RWKV-LM views x as [B * T, C]): flax's GroupNorm on [B, L, C]
        # would pool its statistics over the length too.
        y = self.ln_x(rearrange(y, "b l h n -> (b l) (h n)").astype(x.dtype)).reshape(x.shape)
        return RWKV6State(x[:, -1].astype(jnp.float32), s), self.output(y * g)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> RWKV6State:
        n = self.n
        return RWKV6State(
            shift=jnp.zeros((batch_size, self.d_model), jnp.float32),
            wkv=jnp.zeros((batch_size, self.n_heads, n, n), jnp.float32),
        )

    def step(self, state: RWKV6State, x_t):
        return step_via_prefill(self, state, x_t)
