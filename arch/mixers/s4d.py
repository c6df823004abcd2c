"""S4D, the diagonal state space layer (Gu et al., NeurIPS 2022, "On the Parameterization
and Initialization of Diagonal State Space Models"), as state-spaces/s4's ``s4d.py``
inside S4's block.

Glossary (code -> paper):

- ``d_model`` = H channels, each its own SSM; ``d_state`` = N; ``x`` (the input) = u;
- the layer stores N/2 eigenvalues, one of each conjugate pair, and doubles the real
  part of the output (y = 2 Re(C h)): the paper's conjugate symmetry;
- ``log_dt`` = log Delta, the step size, per channel;
- ``A_log_re``, ``A_im``: A = -exp(A_log_re) + i A_im, the diagonal state matrix (its
  real part stays negative, so the SSM stays stable whatever the parameters);
- ``B_re + i B_im`` = B (1 for S4D-Lin and -Inv; S4D-LegS: the NPLR form's B = V^* b,
  imaginary part clipped to [-2, 2]); ``C_re + i C_im`` = C (initialised CN(0, 1));
  ``D`` = D, the skip D u;
- ``n_ssm``: A and B are ``[n_ssm, N/2]``, shared by H / n_ssm channels each (dt and C
  stay per channel);
- ``init_scheme``: A's initialisation, ``"lin"`` = S4D-Lin (A_n = -1/2 + i pi n; the
  default, as state-spaces/s4 configs/model/layer/s4d.yaml ``init: diag-lin``),
  ``"legs"`` = S4D-LegS (the diagonal of S4's HiPPO-LegS in NPLR form), ``"inv"`` =
  S4D-Inv (A_n = -1/2 + i N/pi (N/(2n+1) - 1));
- ``disc``: ``"zoh"`` dA = exp(Delta A), dB = (exp(Delta A) - 1) / A B, or ``"bilinear"``
  dA = (1 + Delta A/2) / (1 - Delta A/2), dB = Delta B / (1 - Delta A/2) (as S4's eq. 3);
- ``K`` = K-bar, K_l = 2 Re sum_n C_n dB_n dA_n^l: a Vandermonde product (S4D's "kernel
  computation requires just 2 lines of code");
- ``h`` = x_k, the state of the recurrence h_k = dA h_{k-1} + dB u_k (elementwise: A is
  diagonal).

The parallel form convolves with K by FFT; the recurrent form runs the diagonal
recurrence on an ``S4State`` of N/2 complex numbers per channel. The output stage
(GELU, dropout, Dense(2H) -> GLU), the bidirectional form and its padding ``mask`` are
S4's.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch import params
from arch.mixers.s4 import (
    S4State,
    apply_mask,
    check_ssm_options,
    gated_output,
    per_channel,
    ssm_param_rules,
)
from arch.protocol import require_causal
from kernels import hippo
from kernels.linear_scan import linear_scan
from kernels.ssm_kernels import (
    broadcast_init,
    fft_conv,
    fft_conv_flops,
    log_dt_init,
    vandermonde,
)

INIT_SCHEMES = ("legs", "lin", "inv")
DISCRETISATIONS = ("zoh", "bilinear")


class S4D(nn.Module):
    """S4D: a diagonal A of N/2 conjugate-pair halves per channel.

    Options: ``d_state`` = N (even), ``init_scheme`` (S4D-Lin, -LegS or -Inv), ``disc``
    (ZOH or bilinear), ``dt_min``/``dt_max`` (Delta's initial range); ``activation``,
    ``dropout``, ``causal``, ``n_ssm``, ``dt_lr`` and ``c_lr`` as for S4.
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
    init_scheme: str = "lin"
    disc: str = "zoh"
    n_ssm: int | None = None
    dt_lr: str = "ssm"
    c_lr: str = "global"

    def __post_init__(self):
        super().__post_init__()
        check_ssm_options(self)
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown S4D init_scheme {self.init_scheme!r}; valid: legs, lin, inv")
        if self.disc not in DISCRETISATIONS:
            raise ValueError(f"unknown disc {self.disc!r}; valid: zoh, bilinear")

    def param_rules(self) -> dict[str, params.ParamRule]:
        # SSMKernelDiag registers A (inv_A_real, A_imag) and B with the SSM lr and no
        # weight decay; dt and C per ``dt_lr``, ``c_lr``.
        return ssm_param_rules(self, ("A_log_re", "A_im", "B_re", "B_im"))

    def weight_uses(self) -> dict[str, float]:
        """The SSM's A, B, C build the convolution kernel: not per-token weights."""
        return dict.fromkeys(("A_log_re", "A_im", "B_re", "B_im", "C_re", "C_im"), 0.0)

    def sequence_flops(self, length: int) -> float:
        """The FFT convolution with the SSM kernel (``fft_conv_flops``; arch/flops.py)."""
        return fft_conv_flops(length, self.d_model, bidirectional=not self.causal)

    def setup(self):
        H, N2 = self.d_model, self.d_state // 2  # N2 = N/2 stored conjugate halves
        S = self.n_ssm or H
        self.log_dt = self.param("log_dt", log_dt_init(self.dt_min, self.dt_max), (H,))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.output_linear = nn.Dense(2 * H)
        self.drop = nn.Dropout(self.dropout)
        A, B = hippo.s4d_init(self.init_scheme, N2)  # (N/2) each
        self.A_log_re = self.param("A_log_re", broadcast_init(np.log(-A.real)), (S, N2))
        self.A_im = self.param("A_im", broadcast_init(A.imag), (S, N2))
        self.B_re = self.param("B_re", broadcast_init(B.real), (S, N2))
        self.B_im = self.param("B_im", broadcast_init(B.imag), (S, N2))
        # C ~ CN(0, 1); the backward kernel of the bidirectional layer has its own C.
        dirs = 1 if self.causal else 2
        self.C_re = self.param("C_re", nn.initializers.normal(0.5**0.5), (dirs, H, N2))
        self.C_im = self.param("C_im", nn.initializers.normal(0.5**0.5), (dirs, H, N2))

    def discretise(self):
        """(dA, dB), each (H N/2): ZOH or bilinear, elementwise since A is diagonal."""
        dt = jnp.exp(self.log_dt)[:, None]  # (H 1)
        A = per_channel(-jnp.exp(self.A_log_re) + 1j * self.A_im, self.d_model)  # (H N/2)
        B = per_channel(self.B_re + 1j * self.B_im, self.d_model)  # (H N/2)
        dtA = dt * A  # (H N/2)
        if self.disc == "zoh":
            dA = jnp.exp(dtA)  # (H N/2)
            return dA, (dA - 1.0) / A * B
        return (1.0 + dtA / 2) / (1.0 - dtA / 2), dt * B / (1.0 - dtA / 2)

    def __call__(self, x, *, train: bool = False, mask=None):
        """y = K * u + D u with the Vandermonde kernel; then the gated output.

        ``mask``: [B, L] bool, True at real tokens, or None: masked positions are zeroed
        before the convolution, so the bidirectional layer's outputs at real positions do
        not depend on the padding that follows them.
        """
        x = apply_mask(x, mask)
        dA, dB = self.discretise()  # (H N/2) each
        C = self.C_re + 1j * self.C_im  # (dirs H N/2)
        K = 2.0 * vandermonde(C * dB, dA, x.shape[1]).real  # (dirs H L)
        self.sow("intermediates", "kernel", K)  # apply(..., mutable="intermediates") shows it
        y = fft_conv(x, K[0], self.D, None if self.causal else K[1])  # (B L H)
        return gated_output(y, self.activation, self.drop, self.output_linear, train)

    def init_state(self, batch_size: int) -> S4State:
        require_causal(self, "init_state")
        return S4State(jnp.zeros((batch_size, self.d_model, self.d_state // 2), jnp.complex64))

    def step(self, state: S4State, x_t):
        """h' = dA h + dB u, y = 2 Re(C h') + D u: one token."""
        require_causal(self, "step")
        dA, dB = self.discretise()  # (H N/2) each
        C = self.C_re[0] + 1j * self.C_im[0]  # (H N/2)
        h = dA * state.h + dB * x_t.astype(jnp.float32)[..., None]  # (B H N/2)
        y = 2.0 * jnp.einsum("hn,bhn->bh", C, h).real + self.D * x_t  # (B H)
        return S4State(h), gated_output(y, self.activation, self.drop, self.output_linear, False)

    def prefill(self, state: S4State, x):
        """The same recurrence over a chunk, as a parallel linear scan."""
        require_causal(self, "prefill")
        dA, dB = self.discretise()  # (H N/2) each
        C = self.C_re[0] + 1j * self.C_im[0]  # (H N/2)
        dB_u = dB * x.astype(jnp.float32)[..., None]  # (B L H N/2)
        hs, h = linear_scan(dA, dB_u, state.h)  # (B L H N/2), (B H N/2)
        y = 2.0 * jnp.einsum("hn,blhn->blh", C, hs).real + self.D * x  # (B L H)
        return S4State(h), gated_output(y, self.activation, self.drop, self.output_linear, False)
