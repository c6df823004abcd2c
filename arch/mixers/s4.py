"""S4 (DPLR, HiPPO-LegS) and S4D (diagonal) layers, as in state-spaces/s4's S4Block.

Per channel (H = d_model independent SSMs): y = SSM(u) + D u, then GELU and a GLU
output projection (Dense(2H) -> GLU). The parallel form convolves with the SSM kernel
by FFT; the recurrent form steps the discretised state (complex, [batch, H, N]).
S4 keeps all N states of the DPLR system (y = Re(C h)); S4D keeps N/2 conjugate-pair
halves (y = 2 Re(C h)). The bidirectional form (causal=False) adds a second kernel run
over the reversed sequence, as S4 does for LRA.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch.protocol import require_causal
from kernels import hippo, ssm_kernels
from kernels.linear_scan import linear_scan

ACTIVATIONS = {"gelu": nn.gelu, "silu": nn.silu, "identity": lambda x: x}


def _log_dt_init(dt_min: float, dt_max: float):
    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype)
        return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

    return init


def _const(values):
    return lambda key, shape, dtype=jnp.float32: jnp.broadcast_to(jnp.asarray(values, dtype), shape)


def _complex_normal(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return scale * jax.random.normal(key, shape, dtype)

    return init


class _SSMLayer(nn.Module):
    """What S4 and S4D share: D skip, activation, GLU output, protocol plumbing."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    d_state: int = 64
    dt_min: float = 0.001
    dt_max: float = 0.1
    activation: str = "gelu"
    dropout: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.d_state < 2 or self.d_state % 2:
            raise ValueError(
                f"{type(self).__name__}: d_state must be even and >= 2, got {self.d_state}"
            )
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"{type(self).__name__}: need 0 < dt_min <= dt_max")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; valid: " + ", ".join(ACTIVATIONS)
            )

    def _common_setup(self):
        h = self.d_model
        self.log_dt = self.param("log_dt", _log_dt_init(self.dt_min, self.dt_max), (h,))
        self.D = self.param("D", nn.initializers.normal(1.0), (h,))
        self.output_linear = nn.Dense(2 * h)
        self.drop = nn.Dropout(self.dropout)

    def _output(self, y, train: bool):
        y = self.drop(ACTIVATIONS[self.activation](y), deterministic=not train)
        return nn.glu(self.output_linear(y), axis=-1)

    # Subclasses: _c() [2 or 1, H, N'] complex, _kernel(length) -> [dirs, H, L],
    # _discrete() -> the layer's own step parameters (a pytree), _advance(h, those, u_t),
    # _scan(h, those, u) -> (all states, last) and _read(h, c).

    def __call__(self, x, *, train: bool = False):
        k = self._kernel(x.shape[1])
        y = ssm_kernels.fft_conv(x, k[0], self.D, None if self.causal else k[1])
        return self._output(y, train)

    def init_state(self, batch_size: int):
        require_causal(self, "init_state")
        return jnp.zeros((batch_size, self.d_model, self._n_states()), jnp.complex64)

    def step(self, state, x_t):
        require_causal(self, "step")
        state = self._advance(state, self._discrete(), x_t.astype(jnp.float32))
        y = self._read(state, self._c()[0]) + self.D * x_t
        return state, self._output(y, False)

    def prefill(self, state, x):
        require_causal(self, "prefill")
        states, last = self._scan(state, self._discrete(), x.astype(jnp.float32))
        y = self._read(states, self._c()[0]) + self.D * x
        return last, self._output(y, False)


class S4(_SSMLayer):
    """S4 with the HiPPO-LegS NPLR initialisation (Gu et al. 2022, ICLR)."""

    SSM_PARAMS: ClassVar[tuple[str, ...]] = (
        "log_dt",
        "Lambda_log_re",
        "Lambda_im",
        "P_re",
        "P_im",
        "B_re",
        "B_im",
    )  # C is trained at the model's learning rate, as in state-spaces/s4

    def setup(self):
        self._common_setup()
        h, n = self.d_model, self.d_state
        lam, p, b, _ = hippo.nplr_legs(n)
        self.Lambda_log_re = self.param("Lambda_log_re", _const(np.log(-lam.real)), (h, n))
        self.Lambda_im = self.param("Lambda_im", _const(lam.imag), (h, n))
        self.P_re = self.param("P_re", _const(p.real), (h, n))
        self.P_im = self.param("P_im", _const(p.imag), (h, n))
        self.B_re = self.param("B_re", _const(b.real), (h, n))
        self.B_im = self.param("B_im", _const(b.imag), (h, n))
        dirs = 1 if self.causal else 2
        self.C_re = self.param("C_re", _complex_normal(0.5**0.5), (dirs, h, n))
        self.C_im = self.param("C_im", _complex_normal(0.5**0.5), (dirs, h, n))

    def _n_states(self):
        return self.d_state

    def _system(self):
        lam = -jnp.exp(self.Lambda_log_re) + 1j * self.Lambda_im
        return lam, self.P_re + 1j * self.P_im, self.B_re + 1j * self.B_im

    def _c(self):
        return self.C_re + 1j * self.C_im

    def _kernel(self, length):
        lam, p, b = self._system()
        return jnp.stack(
            [ssm_kernels.dplr_kernel(lam, p, p, b, c, self.log_dt, length) for c in self._c()]
        )

    def _discrete(self):
        # The structured (O(N) per step) form, not the dense dA of discretize_dplr.
        lam, p, b = self._system()
        return ssm_kernels.dplr_bilinear_factors(lam, p, p, b, self.log_dt)

    def _advance(self, h, factors, u_t):
        return ssm_kernels.dplr_bilinear_step(factors, h, u_t)

    def _scan(self, h, factors, u):
        def body(h, u_t):
            h = self._advance(h, factors, u_t)
            return h, h

        last, hs = jax.lax.scan(body, h, jnp.swapaxes(u, 0, 1))
        return jnp.swapaxes(hs, 0, 1), last

    def _read(self, h, c):
        return jnp.einsum("hn,...hn->...h", c, h).real


class S4D(_SSMLayer):
    """S4D: diagonal A, N/2 conjugate-pair states (Gu et al. 2022, NeurIPS)."""

    init_scheme: str = "legs"  # S4D-LegS, S4D-Lin or S4D-Inv
    disc: str = "zoh"

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ("log_dt", "A_log_re", "A_im", "B_re", "B_im")

    def __post_init__(self):
        super().__post_init__()
        if self.init_scheme not in ("legs", "lin", "inv"):
            raise ValueError(f"unknown S4D init_scheme {self.init_scheme!r}; valid: legs, lin, inv")
        if self.disc not in ssm_kernels.DISCRETISATIONS:
            raise ValueError(f"unknown disc {self.disc!r}; valid: zoh, bilinear")

    def setup(self):
        self._common_setup()
        h, n = self.d_model, self.d_state // 2
        a = hippo.s4d_init(self.init_scheme, n)
        self.A_log_re = self.param("A_log_re", _const(np.log(-a.real)), (h, n))
        self.A_im = self.param("A_im", _const(a.imag), (h, n))
        self.B_re = self.param("B_re", nn.initializers.ones, (h, n))
        self.B_im = self.param("B_im", nn.initializers.zeros, (h, n))
        dirs = 1 if self.causal else 2
        self.C_re = self.param("C_re", _complex_normal(0.5**0.5), (dirs, h, n))
        self.C_im = self.param("C_im", _complex_normal(0.5**0.5), (dirs, h, n))

    def _n_states(self):
        return self.d_state // 2

    def _system(self):
        return -jnp.exp(self.A_log_re) + 1j * self.A_im, self.B_re + 1j * self.B_im

    def _c(self):
        return self.C_re + 1j * self.C_im

    def _kernel(self, length):
        a, b = self._system()
        return jnp.stack(
            [ssm_kernels.s4d_kernel(a, b, c, self.log_dt, length, self.disc) for c in self._c()]
        )

    def _discrete(self):
        a, b = self._system()
        return ssm_kernels.discretize_diag(a, b, self.log_dt, self.disc)

    def _advance(self, h, discrete, u_t):
        d_a, d_b = discrete
        return d_a * h + d_b * u_t[..., None]

    def _scan(self, h, discrete, u):
        d_a, d_b = discrete
        b_seq = d_b * u[..., None].astype(d_b.dtype)  # [B, L, H, N]
        return linear_scan(jnp.broadcast_to(d_a, b_seq.shape), b_seq, h)

    def _read(self, h, c):
        return 2.0 * jnp.einsum("hn,...hn->...h", c, h).real
