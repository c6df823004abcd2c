"""RWKV-4 TimeMix and ChannelMix (Peng et al. 2023, eq. 11-17; BlinkDL RWKV-LM v4).

Both mix each token with the previous one ("token shift", eq. 11-13, 15-16), so their
recurrent state holds the last input; TimeMix also holds the WKV state.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from kernels.wkv import empty_state, wkv4

_zeros = nn.initializers.zeros


def _ratios(layer_id: int, n_layers: int) -> tuple[float, float]:
    """The RWKV-4 "fancy init" depth ratios: 0 -> 1 and 1 -> almost 0 across layers."""
    ratio_0_to_1 = layer_id / (n_layers - 1) if n_layers > 1 else 0.0
    return ratio_0_to_1, 1.0 - layer_id / n_layers


def _const(values: np.ndarray):
    return lambda key, shape, dtype=jnp.float32: jnp.asarray(values, dtype).reshape(shape)


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

    SSM_PARAMS: ClassVar[tuple[str, ...]] = (
        "time_decay",
        "time_first",
        "time_mix_k",
        "time_mix_v",
        "time_mix_r",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.n_layers < 1 or not 0 <= self.layer_id < self.n_layers:
            raise ValueError(
                f"RWKV: need 0 <= layer_id < n_layers, got {self.layer_id}, {self.n_layers}"
            )

    @property
    def d_att(self) -> int:
        return self.d_attention or self.d_model

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
        # RWKV-4 zero-initialises key, receptance and output (scale_init = 0).
        self.key = nn.Dense(a, use_bias=False, kernel_init=_zeros)
        self.value = nn.Dense(a, use_bias=False)
        self.receptance = nn.Dense(a, use_bias=False, kernel_init=_zeros)
        self.output = nn.Dense(d, use_bias=False, kernel_init=_zeros)

    def prefill(self, state, x):
        last_x, *wkv_state = state
        prev = _shift(last_x, x)
        k = self.key(_mix(x, prev, self.time_mix_k))
        v = self.value(_mix(x, prev, self.time_mix_v))
        r = nn.sigmoid(self.receptance(_mix(x, prev, self.time_mix_r)))
        w = -jnp.exp(self.time_decay.astype(jnp.float32))
        y, wkv_state = wkv4(w, self.time_first, k, v, tuple(wkv_state), impl=self.impl)
        return (x[:, -1].astype(jnp.float32), *wkv_state), self.output(r * y)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int):
        return (
            jnp.zeros((batch_size, self.d_model), jnp.float32),
            *empty_state(batch_size, self.d_att),
        )

    def step(self, state, x_t):
        state, y = self.prefill(state, x_t[:, None])
        return state, y[:, 0]


class RWKVChannelMix(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    hidden: int | None = None

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ("time_mix_k", "time_mix_r")

    def setup(self):
        _, r10 = _ratios(self.layer_id, self.n_layers)
        ramp = np.arange(self.d_model) / self.d_model
        self.time_mix_k = self.param("time_mix_k", _const(ramp**r10), (self.d_model,))
        self.time_mix_r = self.param("time_mix_r", _const(ramp**r10), (self.d_model,))
        self.key = nn.Dense(self.hidden or 4 * self.d_model, use_bias=False)
        self.receptance = nn.Dense(self.d_model, use_bias=False, kernel_init=_zeros)
        self.value = nn.Dense(self.d_model, use_bias=False, kernel_init=_zeros)

    def prefill(self, state, x):
        prev = _shift(state, x)
        k = jnp.square(nn.relu(self.key(_mix(x, prev, self.time_mix_k))))
        r = nn.sigmoid(self.receptance(_mix(x, prev, self.time_mix_r)))
        return x[:, -1].astype(jnp.float32), r * self.value(k)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int):
        return jnp.zeros((batch_size, self.d_model), jnp.float32)

    def step(self, state, x_t):
        state, y = self.prefill(state, x_t[:, None])
        return state, y[:, 0]
