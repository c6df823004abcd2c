"""RWKV-4 TimeMix and ChannelMix (Peng et al. 2023, "RWKV: Reinventing RNNs for the
Transformer Era", eq. 11-17; BlinkDL/RWKV-LM ``RWKV-v4neo/src/model.py``).

Glossary (code -> paper):

- ``time_mix_k``, ``time_mix_v``, ``time_mix_r`` = mu_k, mu_v, mu_r: the token-shift
  interpolation, k_t = W_k (mu_k x_t + (1 - mu_k) x_{t-1}) (eq. 11-13, 15-16);
- ``key``, ``value``, ``receptance``, ``output`` = W_k, W_v, W_r, W_o;
- ``time_decay`` = w, applied as ``-exp(time_decay)`` (the per-channel decay, eq. 14);
- ``time_first`` = u, the bonus of the current token (eq. 14);
- ``wkv4`` = the WKV operator (eq. 14), running-max stabilised (``kernels.wkv``);
- ``d_attention`` = the width of k, v, r (``dim_att`` in RWKV-LM; d_model by default).

Both layers mix each token with the previous one, so their recurrent state holds the
last input (``shift``); TimeMix also holds the WKV state (``num, den, max``).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch import params
from arch.protocol import step_via_prefill
from kernels.wkv import WKVState, empty_state, wkv4

_zeros = nn.initializers.zeros


def _ratios(layer_id: int, n_layers: int) -> tuple[float, float]:
    """The RWKV-4 "fancy init" depth ratios: 0 -> 1 and 1 -> almost 0 across layers."""
    ratio_0_to_1 = layer_id / (n_layers - 1) if n_layers > 1 else 0.0
    return ratio_0_to_1, 1.0 - layer_id / n_layers


def _const(values: np.ndarray):
    return lambda key, shape, dtype=jnp.float32: jnp.asarray(values, dtype).reshape(shape)


class RWKVState(NamedTuple):
    shift: jnp.ndarray  # [B, d_model] float32: x_{t-1}, the last input seen
    wkv: WKVState  # [B, d_attention] each: the running WKV sums


class ShiftState(NamedTuple):
    shift: jnp.ndarray  # [B, d_model] float32: x_{t-1} (ChannelMix's token shift)


# RWKV-LM RWKV-v4neo/src/model.py configure_optimizers (layerwise_lr=1, the default;
# my_pile_stage != 2): time_mix at 1x, time_decay at 2x and time_first at 3x the base
# learning rate, none of them weight-decayed.
_TIME_RULES = {
    "time_decay": params.ParamRule(lr_mult=2.0, wd_mult=0.0),
    "time_first": params.ParamRule(lr_mult=3.0, wd_mult=0.0),
    "time_mix_k": params.NO_DECAY,
    "time_mix_v": params.NO_DECAY,
    "time_mix_r": params.NO_DECAY,
}


def orthogonal(scale: float = 1.0):
    """RWKV-LM's ``generate_init_weight`` for a Linear layer: orthogonal with gain
    ``scale * sqrt(out / in)`` when it widens, ``scale`` otherwise (model.py, the
    ``gain`` computed from the weight's shape). Flax kernels are ``[in, out]``."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape[0], shape[-1]
        gain = math.sqrt(fan_out / fan_in) if fan_out > fan_in else 1.0
        return nn.initializers.orthogonal(scale * gain)(key, shape, dtype)

    return init


def small_embedding(bound: float = 1e-4):
    """RWKV's "small init embedding": U(-bound, bound) (RWKV paper, section 3.4's
    small-init embedding; RWKV-LM initialises ``emb.weight`` with bound = its lr_init)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# RWKV-LM: ``head.weight`` orthogonal with scale 0.5 (gain 0.5 sqrt(vocab / d_model)).
head_init = orthogonal(0.5)


def _shift(last_x, x):
    """The previous token of every position: [last_x, x_0, ..., x_{L-2}]."""
    return jnp.concatenate([last_x[:, None].astype(x.dtype), x[:, :-1]], axis=1)


def _mix(x, prev, mix):
    return x * mix + prev * (1.0 - mix)


class RWKVTimeMix(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    d_attention: int | None = None
    impl: str = "auto"

    PARAM_RULES: ClassVar = _TIME_RULES

    def __post_init__(self):
        super().__post_init__()
        if self.n_layers < 1 or not 0 <= self.layer_id < self.n_layers:
            raise ValueError(
                f"RWKV: need 0 <= layer_id < n_layers, got {self.layer_id}, {self.n_layers}"
            )

    @property
    def d_att(self) -> int:
        return self.d_attention or self.d_model

    def sequence_flops(self, length: int) -> float:
        """Per token and channel: the WKV recurrence's two state elements (numerator and
        denominator), each with an input, a decay update and a read-out (RWKV-4 eq. 14-16),
        2 FLOPs each (arch/flops.py)."""
        return 12.0 * self.d_att

    def setup(self):
        r01, r10 = _ratios(self.layer_id, self.n_layers)
        a, d = self.d_att, self.d_model
        h = np.arange(a)
        decay_speed = -5 + 8 * (h / max(a - 1, 1)) ** (0.7 + 1.3 * r01)
        zigzag = ((h + 1) % 3 - 1) * 0.5
        ramp = np.arange(d) / d
        self.time_decay = self.param("time_decay", _const(decay_speed), (a,))
        self.time_first = self.param("time_first", _const(math.log(0.3) + zigzag), (a,))
        self.time_mix_k = self.param("time_mix_k", _const(ramp**r10), (d,))
        self.time_mix_v = self.param("time_mix_v", _const(ramp**r10 + 0.3 * r01), (d,))
        self.time_mix_r = self.param("time_mix_r", _const(ramp ** (0.5 * r10)), (d,))
        # RWKV-LM generate_init_weight: att.key, att.receptance and att.output start at
        # zero; att.value is orthogonal (gain 1).
        self.key = nn.Dense(a, use_bias=False, kernel_init=_zeros)
        self.value = nn.Dense(a, use_bias=False, kernel_init=orthogonal())
        self.receptance = nn.Dense(a, use_bias=False, kernel_init=_zeros)
        self.output = nn.Dense(d, use_bias=False, kernel_init=_zeros)

    def prefill(self, state: RWKVState, x):
        prev = _shift(state.shift, x)  # x_{t-1}                      [B, L, d_model]
        k = self.key(_mix(x, prev, self.time_mix_k))  # eq. 12        [B, L, d_att]
        v = self.value(_mix(x, prev, self.time_mix_v))  # eq. 13
        r = nn.sigmoid(self.receptance(_mix(x, prev, self.time_mix_r)))  # eq. 11, sigma(r)
        w = -jnp.exp(self.time_decay.astype(jnp.float32))  # decay < 0 [d_att]
        y, wkv = wkv4(w, self.time_first, k, v, state.wkv, impl=self.impl)  # eq. 14
        return RWKVState(x[:, -1].astype(jnp.float32), wkv), self.output(r * y)  # eq. 15

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> RWKVState:
        return RWKVState(
            shift=jnp.zeros((batch_size, self.d_model), jnp.float32),
            wkv=empty_state(batch_size, self.d_att),
        )

    def step(self, state: RWKVState, x_t):
        return step_via_prefill(self, state, x_t)


class RWKVChannelMix(nn.Module):
    """RWKV's ChannelMix. ``version=6``: RWKV-6's (``RWKV_CMix_x060``): the same layer
    with mu initialised as ramp^(r^3) and a hidden width of 3.5 d_model (rounded down to a
    multiple of 32)."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    hidden: int | None = None
    version: int = 4

    PARAM_RULES: ClassVar = {"time_mix_k": params.NO_DECAY, "time_mix_r": params.NO_DECAY}

    def setup(self):
        if self.version not in (4, 6):
            raise ValueError(f"RWKVChannelMix: version must be 4 or 6, got {self.version}")
        _, r10 = _ratios(self.layer_id, self.n_layers)
        power = r10**3 if self.version == 6 else r10
        ramp = np.arange(self.d_model) / self.d_model
        self.time_mix_k = self.param("time_mix_k", _const(ramp**power), (self.d_model,))
        self.time_mix_r = self.param("time_mix_r", _const(ramp**power), (self.d_model,))
        default = int(3.5 * self.d_model) // 32 * 32 if self.version == 6 else 4 * self.d_model
        # ffn.key orthogonal (gain sqrt(hidden / d_model)); ffn.receptance and ffn.value
        # start at zero (RWKV-LM generate_init_weight).
        self.key = nn.Dense(self.hidden or default, use_bias=False, kernel_init=orthogonal())
        self.receptance = nn.Dense(self.d_model, use_bias=False, kernel_init=_zeros)
        self.value = nn.Dense(self.d_model, use_bias=False, kernel_init=_zeros)

    def prefill(self, state: ShiftState, x):
        prev = _shift(state.shift, x)
        k = jnp.square(nn.relu(self.key(_mix(x, prev, self.time_mix_k))))  # eq. 16-17
        r = nn.sigmoid(self.receptance(_mix(x, prev, self.time_mix_r)))
        return ShiftState(x[:, -1].astype(jnp.float32)), r * self.value(k)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> ShiftState:
        return ShiftState(jnp.zeros((batch_size, self.d_model), jnp.float32))

    def step(self, state: ShiftState, x_t):
        return step_via_prefill(self, state, x_t)
