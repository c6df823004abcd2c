"""The Mamba block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", Figure 3 and Algorithm 2; state-spaces/mamba ``mamba_simple.py``).

Glossary (code -> paper, Algorithm 2):

- ``d_model`` = D; ``d_inner`` = E D (``expand`` = E = 2); ``d_state`` = N;
- ``dt_rank`` = R, the rank of the Delta projection (ceil(D / 16));
- ``in_proj`` -> (x, z): the two branches of Figure 3; ``conv_weight``/``conv_bias``:
  the causal depthwise conv1d of width ``d_conv``;
- ``x_proj`` -> (dt, B, C) = (s_Delta, s_B, s_C): the selection projections (eq. 2 and
  Algorithm 2, lines 2-4); ``dt_proj`` + ``dt_bias`` then softplus = tau_Delta;
- ``A_log``: A = -exp(A_log), S4D-Real init (A_n = -(n + 1));
- ``D``: the skip connection y + D x; ``out_proj``: the output projection;
- ``selective_scan`` = SSM(A, B, C)(x) with ZOH for A and Euler for B (eq. 4).

in_proj -> (x, z); causal depthwise conv1d on x -> SiLU -> x_proj -> (dt, B, C);
dt_proj (+ dt_bias, softplus inside the scan) -> selective scan with the D skip ->
gate SiLU(z) -> out_proj. The recurrent state is a ``MambaState``.
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
from kernels.selective_scan import selective_scan


class MambaState(NamedTuple):
    conv: jnp.ndarray  # [B, d_conv - 1, d_inner]: the last conv inputs
    ssm: jnp.ndarray  # [B, d_inner, d_state] float32: h of the selective scan


def dt_bias_init(dt_min: float, dt_max: float, floor: float):
    """softplus^-1 of dt ~ log-uniform[dt_min, dt_max], clamped at ``floor`` (official init)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, floor)
        return dt + jnp.log(-jnp.expm1(-dt))  # inverse of softplus

    return init


def a_log_init(key, shape, dtype=jnp.float32):
    """S4D-Real: A = -(1..N) for every channel, stored as log(1..N)."""
    d_inner, d_state = shape
    return jnp.log(jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=dtype), (d_inner, d_state)))


def uniform_init(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear_init(scale: float = 1.0):
    """PyTorch's default Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), times
    ``scale``; Flax kernels are ``[in, out]``, so fan_in is the first axis."""

    def init(key, shape, dtype=jnp.float32):
        bound = scale / math.sqrt(shape[0])
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Mamba(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    impl: str = "auto"

    # state-spaces/mamba mamba_simple.py: A_log and D are ``_no_weight_decay`` and keep
    # the model's learning rate (no ``_optim`` override); dt_bias is dt_proj.bias there,
    # which the usual grouping (biases) does not decay either.
    PARAM_RULES: ClassVar = {
        "A_log": params.NO_DECAY,
        "D": params.NO_DECAY,
        "dt_bias": params.NO_DECAY,
    }

    def __post_init__(self):
        super().__post_init__()
        for name in ("d_model", "d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"Mamba: {name} must be >= 1, got {getattr(self, name)}")
        if not (self.dt_rank == "auto" or (isinstance(self.dt_rank, int) and self.dt_rank > 0)):
            raise ValueError(
                f"Mamba: dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}"
            )
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"Mamba: need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    def weight_uses(self) -> dict[str, float]:
        """A_log is the state matrix of the recurrence, not a per-token weight."""
        return {"A_log": 0.0}

    def sequence_flops(self, length: int) -> float:
        """Per token and state element (d_inner x N): the input delta B u, the update
        h = exp(delta A) h + ..., the read-out C h; 2 FLOPs each (arch/flops.py)."""
        return 6.0 * self.d_inner * self.d_state

    def setup(self):
        e, n, r, k = self.d_inner, self.d_state, self.rank, self.d_conv
        # Linear layers keep PyTorch's default init in state-spaces/mamba:
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)).
        self.in_proj = nn.Dense(2 * e, use_bias=self.bias, kernel_init=torch_linear_init())
        bound = 1.0 / math.sqrt(k)  # PyTorch's default Conv1d init (fan_in = d_conv)
        self.conv_weight = self.param("conv_weight", uniform_init(bound), (k, e))
        if self.conv_bias:
            self.conv_bias_ = self.param("conv_bias", uniform_init(bound), (e,))
        self.x_proj = nn.Dense(r + 2 * n, use_bias=False, kernel_init=torch_linear_init())
        self.dt_proj = nn.Dense(e, use_bias=False, kernel_init=uniform_init(r**-0.5))
        self.dt_bias = self.param(
            "dt_bias", dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (e,)
        )
        self.A_log = self.param("A_log", a_log_init, (e, n))
        self.D = self.param("D", nn.initializers.ones, (e,))
        # mixer_seq_simple.py _init_weights (rescale_prenorm_residual): out_proj's
        # PyTorch default init divided by sqrt(n_layer) (one residual branch per layer).
        out_init = torch_linear_init(1.0 / math.sqrt(self.n_layers))
        self.out_proj = nn.Dense(self.d_model, use_bias=self.bias, kernel_init=out_init)

    def _conv(self, conv_state, x):
        """Causal depthwise conv over [conv_state; x]; returns (new conv_state, output)."""
        return causal_conv(
            conv_state, x, self.conv_weight, self.conv_bias_ if self.conv_bias else None
        )

    def prefill(self, state: MambaState, x):
        x_in, z = jnp.split(self.in_proj(x), 2, axis=-1)  # [B, L, E] each
        conv_state, x_conv = self._conv(state.conv, x_in)
        x_conv = nn.silu(x_conv)
        dt, B, C = jnp.split(self.x_proj(x_conv), [self.rank, self.rank + self.d_state], axis=-1)
        y, ssm_state = selective_scan(
            x_conv,
            self.dt_proj(dt),
            -jnp.exp(self.A_log.astype(jnp.float32)),
            B,
            C,
            D=self.D,
            z=z,
            delta_bias=self.dt_bias,
            delta_softplus=True,
            state=state.ssm,
            impl=self.impl,
        )
        return MambaState(conv_state, ssm_state), self.out_proj(y)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> MambaState:
        return MambaState(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.d_inner), jnp.float32),
            ssm=jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32),
        )

    def step(self, state: MambaState, x_t):
        return step_via_prefill(self, state, x_t)
