"""S4, the structured state space layer (Gu, Goel, Re, ICLR 2022, "Efficiently Modeling
Long Sequences with Structured State Spaces"), in state-spaces/s4's S4Block.

Glossary (code -> paper):

- ``d_model`` = H: H independent SSMs, one per channel (Section 3.4); ``d_state`` = N;
- ``x`` (the layer input) = u; ``h`` = x_k, the SSM state (eq. 3);
- ``log_dt`` = log Delta, the step size of the discretisation (eq. 3);
- ``Lambda_log_re``, ``Lambda_im``: Lambda = -exp(Lambda_log_re) + i Lambda_im, the
  diagonal of A = Lambda - P P^* in the HiPPO-LegS eigenbasis (eq. 2 and 6, Theorem 1;
  Q = P as in Section 3.4's last paragraph);
- ``P_re + i P_im`` = P, the rank-1 correction; ``B_re + i B_im`` = B;
  ``C_re + i C_im`` = C; ``D`` = D, the skip D u (eq. 1);
- ``dA``, ``dB`` = A-bar, B-bar: the bilinear discretisation (eq. 3);
- ``K`` = K-bar, the SSM convolution kernel (eq. 5), by Algorithm 1;
- ``omega`` = the L-th roots of unity at which Algorithm 1 evaluates K's generating
  function; ``k00``, ``k01``, ``k10``, ``k11``: its four Cauchy kernels.

Per channel, y = K * u + D u (eq. 4), then GELU, dropout and the GLU output projection
(Dense(2H) -> GLU) of state-spaces/s4's S4Block. ``__call__`` builds K by Algorithm 1
and convolves by FFT; ``prefill`` and ``step`` run the recurrence (eq. 3) on a complex
``S4State``, one step in O(N) per channel (Theorem 2). S4 keeps all N states of the
DPLR system, so y = Re(C h). ``causal=False`` adds a second C whose kernel runs over the
reversed sequence (the bidirectional layer state-spaces/s4 uses for LRA).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import linen as nn

from arch import params
from arch.protocol import require_causal, step_via_prefill
from kernels import hippo
from kernels.ssm_kernels import bilinear_dplr, broadcast_init, cauchy, fft_conv, log_dt_init

ACTIVATIONS = {"gelu": nn.gelu, "silu": nn.silu, "identity": lambda x: x}


class S4State(NamedTuple):
    """The recurrent state of S4 and S4D."""

    h: jax.Array  # [B, H, N] complex64 (S4D: [B, H, N/2]): x_k of eq. 3


def check_ssm_options(layer: nn.Module) -> None:
    """The options S4 and S4D share: N even (conjugate pairs), a Delta range, an activation."""
    name = type(layer).__name__
    if layer.d_state < 2 or layer.d_state % 2:
        raise ValueError(f"{name}: d_state must be even and >= 2, got {layer.d_state}")
    if not 0 < layer.dt_min <= layer.dt_max:
        raise ValueError(f"{name}: need 0 < dt_min <= dt_max")
    if layer.activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {layer.activation!r}; valid: " + ", ".join(ACTIVATIONS)
        )


def gated_output(y, activation: str, drop: nn.Dropout, output_linear: nn.Dense, train: bool):
    """S4Block's output stage: activation, dropout, Dense(2H) and a GLU back to H channels."""
    y = drop(ACTIVATIONS[activation](y), deterministic=not train)  # (B L H)
    return nn.glu(output_linear(y), axis=-1)  # (B L H)


class S4(nn.Module):
    """S4 with A initialised to HiPPO-LegS in its normal plus low-rank form.

    Options: ``d_model`` = H, ``d_state`` = N (the state size per channel, even),
    ``dt_min``/``dt_max``: the range of Delta at initialisation, ``activation`` and
    ``dropout``: the output stage, ``causal=False``: the bidirectional layer.
    """

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
        check_ssm_options(self)

    # state-spaces/s4 (SSKernelNPLR) registers log_dt, B, P and A (log_w_real, w_imag) with
    # the SSM lr (0.001) and no weight decay; C is a plain parameter at the model's rate.
    PARAM_RULES: ClassVar = dict.fromkeys(
        ("log_dt", "Lambda_log_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im"), params.SSM
    )

    def setup(self):
        H, N = self.d_model, self.d_state
        self.log_dt = self.param("log_dt", log_dt_init(self.dt_min, self.dt_max), (H,))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.output_linear = nn.Dense(2 * H)
        self.drop = nn.Dropout(self.dropout)
        # HiPPO-LegS = V (Lambda - P P^*) V^* (Theorem 1); A, P and B in the eigenbasis V.
        Lambda, P, B, _ = hippo.nplr_legs(N)  # (N) each
        self.Lambda_log_re = self.param(
            "Lambda_log_re", broadcast_init(np.log(-Lambda.real)), (H, N)
        )
        self.Lambda_im = self.param("Lambda_im", broadcast_init(Lambda.imag), (H, N))
        self.P_re = self.param("P_re", broadcast_init(P.real), (H, N))
        self.P_im = self.param("P_im", broadcast_init(P.imag), (H, N))
        self.B_re = self.param("B_re", broadcast_init(B.real), (H, N))
        self.B_im = self.param("B_im", broadcast_init(B.imag), (H, N))
        # C ~ CN(0, 1); a second C for the backward kernel when bidirectional.
        dirs = 1 if self.causal else 2
        self.C_re = self.param("C_re", nn.initializers.normal(0.5**0.5), (dirs, H, N))
        self.C_im = self.param("C_im", nn.initializers.normal(0.5**0.5), (dirs, H, N))

    def continuous(self):
        """The continuous SSM (eq. 1): A = diag(Lambda) - P P^* and B, as (Lambda, P, B)."""
        Lambda = -jnp.exp(self.Lambda_log_re) + 1j * self.Lambda_im  # (H N)
        P = self.P_re + 1j * self.P_im  # (H N)
        B = self.B_re + 1j * self.B_im  # (H N)
        return Lambda, P, B

    def discretise(self):
        """dA, dB of eq. 3 as a ``BilinearDPLR``: ``.dA(h)`` in O(N) (Theorem 2), ``.dB``."""
        Lambda, P, B = self.continuous()
        return bilinear_dplr(Lambda, P, P, B, self.log_dt)

    def __call__(self, x, *, train: bool = False):
        """y = K * u + D u (eq. 4-5), with K by Algorithm 1; then the gated output."""
        L = x.shape[1]
        Lambda, P, B = self.continuous()  # (H N) each
        C = self.C_re + 1j * self.C_im  # (dirs H N)
        dt = jnp.exp(self.log_dt)[:, None]  # (H 1)
        # Algorithm 1. (1) Truncate the generating function at L: C~ = C (I - dA^L).
        dA_L = jnp.linalg.matrix_power(self.discretise().dense_dA(), L)  # (H N N)
        C = C - jnp.einsum("khn,hnm->khm", C, dA_L)  # (dirs H N)
        # (2) Evaluate it at the roots of unity omega, through the bilinear map z(omega),
        # as four Cauchy kernels k_ab = sum_n a_n b_n / (z - Lambda_n).
        omega = jnp.exp(-2j * jnp.pi * jnp.arange(L) / L)  # (L)
        z = (2.0 / dt) * (1.0 - omega) / (1.0 + omega)  # (H L)
        k00 = cauchy(C * B, z, Lambda)  # (dirs H L)
        k01 = cauchy(C * P, z, Lambda)  # (dirs H L)
        k10 = cauchy(P.conj() * B, z, Lambda)  # (H L)
        k11 = cauchy(P.conj() * P, z, Lambda)  # (H L)
        # (3) Woodbury: the rank-1 correction of (z - A)^-1; 2 / (1 + omega) from dB.
        K_omega = 2.0 / (1.0 + omega) * (k00 - k01 * k10 / (1.0 + k11))  # (dirs H L)
        # (4) Inverse FFT back to the kernel.
        K = jnp.fft.ifft(K_omega, n=L, axis=-1).real  # (dirs H L)
        self.sow("intermediates", "kernel", K)  # apply(..., mutable="intermediates") shows it
        y = fft_conv(x, K[0], self.D, None if self.causal else K[1])  # (B L H)
        return gated_output(y, self.activation, self.drop, self.output_linear, train)

    def init_state(self, batch_size: int) -> S4State:
        require_causal(self, "init_state")
        return S4State(jnp.zeros((batch_size, self.d_model, self.d_state), jnp.complex64))

    def prefill(self, state: S4State, x):
        """h_k = dA h_{k-1} + dB u_k, y_k = Re(C h_k) + D u_k (eq. 3), one step at a time."""
        require_causal(self, "prefill")
        disc = self.discretise()
        C = self.C_re[0] + 1j * self.C_im[0]  # (H N)

        def recurrence(h, u_k):
            h = disc.dA(h) + disc.dB * u_k[..., None]  # (B H N)
            return h, h

        u = rearrange(x.astype(jnp.float32), "b l h -> l b h")
        h, hs = jax.lax.scan(recurrence, state.h, u)  # (B H N), (L B H N)
        y = jnp.einsum("hn,lbhn->blh", C, hs).real + self.D * x  # (B L H)
        return S4State(h), gated_output(y, self.activation, self.drop, self.output_linear, False)

    def step(self, state: S4State, x_t):
        """One token: ``prefill``'s recurrence on a chunk of length 1."""
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)
