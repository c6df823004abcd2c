"""The Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and
Efficient Algorithms Through Structured State Space Duality", Figure 6 and section 7;
state-spaces/mamba ``mamba_ssm/modules/mamba2.py``; transformers' ``Mamba2Mixer``,
against which ``tests/arch/test_mamba2.py`` checks it).

Glossary (code -> paper):

- ``d_model`` = D; ``d_inner`` = E D (``expand`` = 2); ``head_dim`` = P; ``n_heads`` =
  d_inner / P; ``d_state`` = N; ``n_groups`` = G (B and C shared by H / G heads, as
  grouped-value attention shares keys);
- ``in_proj`` -> (z, x, B, C, dt) in parallel (the "parallel projections" of section
  7.1, unlike Mamba-1's sequential x -> dt, B, C);
- ``conv_weight``/``conv_bias``: the causal depthwise conv over (x, B, C), then SiLU;
- ``A_log``: A = -exp(A_log), one scalar per head (the scalar-times-identity SSD
  structure); ``dt_bias``: dt = softplus(dt + dt_bias); ``D`` the skip, per head;
- ``kernels.ssd.ssd``: the SSM; ``norm_weight``: the gated RMSNorm, RMSNorm(y * SiLU(z))
  per group (``norm_before_gate=False``, section 7.3); ``out_proj``.

Initialisation as ``mamba2.py``: A ~ U(1, 16) per head, dt log-uniform in
[dt_min, dt_max] (floored), D = 1, linear layers PyTorch's default with out_proj divided
by sqrt(n_layer) (``_init_weights``). A_log, D and dt_bias are not weight-decayed.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import linen as nn

from arch import params
from arch.mixers.mamba import dt_bias_init, torch_linear_init, uniform_init
from arch.mixers.shortconv import causal_conv
from arch.protocol import step_via_prefill
from kernels.ssd import ssd


class Mamba2State(NamedTuple):
    conv: jnp.ndarray  # [B, d_conv - 1, d_inner + 2 G N]: the last conv inputs
    ssm: jnp.ndarray  # [B, H, P, N] float32: h of the SSD recurrence


def a_log_uniform(low: float, high: float):
    def init(key, shape, dtype=jnp.float32):
        return jnp.log(jax.random.uniform(key, shape, dtype, low, high))

    return init


class Mamba2(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    head_dim: int | None = None  # None: 64 (mamba2.py's headdim), or d_inner if smaller
    n_groups: int = 1
    chunk_size: int = 256
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    a_init_range: tuple[float, float] = (1.0, 16.0)
    norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False
    impl: str = "auto"

    # mamba2.py: A_log, D and dt_bias carry ``_no_weight_decay``; the gated norm's
    # weight is a norm scale (the usual no-decay convention).
    PARAM_RULES: ClassVar = {
        "A_log": params.NO_DECAY,
        "D": params.NO_DECAY,
        "dt_bias": params.NO_DECAY,
        "norm_weight": params.NO_DECAY,
        "conv_bias": params.NO_DECAY,
    }

    def __post_init__(self):
        super().__post_init__()
        if self.d_inner % self.p:
            raise ValueError(
                f"Mamba2: d_inner = expand * d_model = {self.d_inner} is not divisible by "
                f"head_dim={self.p}; pick a head_dim that divides it"
            )
        if self.n_heads % self.n_groups:
            raise ValueError(f"Mamba2: n_groups={self.n_groups} must divide n_heads={self.n_heads}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"Mamba2: need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def p(self) -> int:
        """The head dimension P."""
        return self.head_dim or min(64, self.d_inner)

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.p

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    def sequence_flops(self, length: int) -> float:
        """Per token and state element (heads x P x N): the input x B^T dt, the scalar
        decay update, the read-out h C; 2 FLOPs each, the recurrent form's work (the
        chunked SSD's extra intra-chunk products are not model FLOPs; arch/flops.py)."""
        return 6.0 * self.d_inner * self.d_state

    def setup(self):
        e, h, k = self.d_inner, self.n_heads, self.d_conv
        self.in_proj = nn.Dense(
            2 * e + 2 * self.n_groups * self.d_state + h,
            use_bias=self.bias,
            kernel_init=torch_linear_init(),
        )
        bound = 1.0 / math.sqrt(k)  # PyTorch's default Conv1d init (fan_in = d_conv)
        self.conv_weight = self.param("conv_weight", uniform_init(bound), (k, self.conv_dim))
        if self.conv_bias:
            self.conv_bias_ = self.param("conv_bias", uniform_init(bound), (self.conv_dim,))
        self.dt_bias = self.param(
            "dt_bias", dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (h,)
        )
        self.A_log = self.param("A_log", a_log_uniform(*self.a_init_range), (h,))
        self.D = self.param("D", nn.initializers.ones, (h,))
        self.norm_weight = self.param("norm_weight", nn.initializers.ones, (e,))
        out_init = torch_linear_init(1.0 / math.sqrt(self.n_layers))
        self.out_proj = nn.Dense(self.d_model, use_bias=self.bias, kernel_init=out_init)

    def _gated_norm(self, y, z):
        """RMSNorm(y * SiLU(z)) over each group of d_inner / G channels, times the weight."""
        g = rearrange(y * nn.silu(z), "b l (g c) -> b l g c", g=self.n_groups)
        g = g * jax.lax.rsqrt(jnp.mean(g * g, axis=-1, keepdims=True) + self.norm_eps)
        return rearrange(g, "b l g c -> b l (g c)") * self.norm_weight

    def _scan_options(self, length: int) -> dict:
        """A chunk no longer than the input: a step (one token) is one chunk of 1."""
        return {} if self.impl == "sequential" else {"chunk_size": min(self.chunk_size, length)}

    def prefill(self, state: Mamba2State, x):
        e, gn = self.d_inner, self.n_groups * self.d_state
        z, xbc, dt = jnp.split(self.in_proj(x), [e, e + self.conv_dim], axis=-1)
        bias = self.conv_bias_ if self.conv_bias else None
        conv_state, xbc = causal_conv(state.conv, xbc, self.conv_weight, bias)
        x_ssm, b, c = jnp.split(nn.silu(xbc), [e, e + gn], axis=-1)
        y, ssm_state = ssd(
            rearrange(x_ssm, "b l (h p) -> b l h p", p=self.p),
            jax.nn.softplus(dt.astype(jnp.float32) + self.dt_bias),
            -jnp.exp(self.A_log.astype(jnp.float32)),
            rearrange(b, "b l (g n) -> b l g n", g=self.n_groups),
            rearrange(c, "b l (g n) -> b l g n", g=self.n_groups),
            self.D,
            state.ssm,
            impl=self.impl,
            # a chunk no longer than the input: one token (a step) is then one chunk of 1
            **(
                {"chunk_size": min(self.chunk_size, x.shape[1])}
                if self.impl != "sequential"
                else {}
            ),
        )
        y = self._gated_norm(rearrange(y, "b l h p -> b l (h p)").astype(x.dtype), z)
        return Mamba2State(conv_state, ssm_state), self.out_proj(y)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> Mamba2State:
        return Mamba2State(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.conv_dim), jnp.float32),
            ssm=jnp.zeros((batch_size, self.n_heads, self.p, self.d_state), jnp.float32),
        )

    def step(self, state: Mamba2State, x_t):
        return step_via_prefill(self, state, x_t)
