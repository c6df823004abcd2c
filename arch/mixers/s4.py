"""S4, the structured state space layer (Gu, Goel, Re, ICLR 2022, "Efficiently Modeling
Long Sequences with Structured State Spaces"), in state-spaces/s4's S4Block.

Glossary (code -> paper):

- ``d_model`` = H: H SSMs, one per channel (Section 3.4); ``d_state`` = N;
- ``x`` (the layer input) = u; ``h`` = x_k, the SSM state (eq. 3);
- conjugate pairs: A, B, C are real in the HiPPO basis, so their eigenbasis forms come in
  conjugate pairs; the layer stores N/2 of them (one of each pair) and the other half is
  their conjugate, as in state-spaces/s4 (``hippo.nplr`` keeps N/2: hippo.py:248-255).
  The full system is A = diag(Lambda_f) - P_f P_f^* with Lambda_f = [Lambda, conj Lambda],
  P_f = [P, conj P]: the rank-1 term couples the two halves, so its sums (Cauchy kernels,
  Q^* x) run over both halves (2 Re of the stored half's) and the output is y = 2 Re(C h);
- ``log_dt`` = log Delta, the step size of the discretisation (eq. 3), per channel;
- ``Lambda_log_re``, ``Lambda_im``: Lambda = -exp(Lambda_log_re) + i Lambda_im, the
  diagonal of A = Lambda - P P^* in the HiPPO-LegS eigenbasis (eq. 2 and 6, Theorem 1;
  Q = P as in Section 3.4's last paragraph);
- ``P_re + i P_im`` = P, the rank-1 correction; ``B_re + i B_im`` = B (its imaginary part
  clipped to [-2, 2] at init, ``hippo.nplr_legs``); ``D`` = D, the skip D u (eq. 1);
- ``n_ssm``: Lambda, P, B are ``[n_ssm, N/2]``, shared by H / n_ssm channels each;
- ``C_re + i C_im`` = C~ = C (I - dA^L), L = ``max_len``: the trained parameter is the
  truncated-generating-function C of Algorithm 1 step (1), not C (state-spaces/s4
  ``_setup_C``, ssm.py:683-709); C itself, C = C~ (I - dA^L)^-1, is recovered for the
  recurrence (ssm.py:1001-1014);
- ``dA``, ``dB`` = A-bar, B-bar: the bilinear discretisation (eq. 3);
- ``K`` = K-bar, the SSM convolution kernel (eq. 5), by Algorithm 1 at length L then cut
  to the input's length;
- ``omega`` = the L-th roots of unity at which Algorithm 1 evaluates K's generating
  function (half of them: K is real); ``k00``, ``k01``, ``k10``, ``k11``: its four
  Cauchy kernels.

Per channel, y = K * u + D u (eq. 4), then GELU, dropout and the GLU output projection
(Dense(2H) -> GLU) of state-spaces/s4's S4Block. ``__call__`` builds K by Algorithm 1
and convolves by FFT; ``prefill`` and ``step`` run the recurrence (eq. 3) on a complex
``S4State`` of N/2 numbers per channel, one step in O(N) (Theorem 2). ``causal=False``
adds a second C whose kernel runs over the reversed sequence (the bidirectional layer
state-spaces/s4 uses for LRA); ``mask`` keeps right padding out of it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import linen as nn

from arch import params
from arch.protocol import require_causal, step_via_prefill
from kernels import hippo
from kernels.ssm_kernels import (
    bilinear_dplr,
    broadcast_init,
    cauchy,
    fft_conv,
    fft_conv_flops,
    log_dt_init,
    times_inverse_one_minus,
)

ACTIVATIONS = {"gelu": nn.gelu, "silu": nn.silu, "identity": lambda x: x}

# Optimizer options, as the LRA configs of state-spaces/s4 set them (see ``ssm_param_rules``).
DT_LR = ("ssm", "global")
C_LR = ("global", "ssm")

# C = C~ (I - dA^L)^-1 by the doubling product stops at dA^(L 2^(k+1)) >= this many steps:
# the error is relative ||dA^(2^30)|| <= ||dA||^(2^30) (||dA||_2 < 1 since A + A^* < 0),
# i.e. what the state still remembers after 2^30 steps.
C_RECOVERY_HORIZON = 2**30


class S4State(NamedTuple):
    """The recurrent state of S4 and S4D.

    S4 also carries ``C``, recovered from the trained C~ once in ``init_state``: it is a
    function of the parameters (dense N x N powers per channel, far costlier than a
    step), not memory of the past, so ``arch.state_size`` does not count it (``DERIVED``).
    """

    h: jax.Array  # [B, H, N/2] complex64: x_k of eq. 3, one of each conjugate pair
    C: jax.Array | None = None  # [B, H, N/2] complex64: S4's C = C~ (I - dA^L)^-1; S4D: None

    DERIVED = ("C",)


def check_ssm_options(layer: nn.Module) -> None:
    """The options S4 and S4D share: N even (conjugate pairs), a Delta range, an activation,
    ``n_ssm`` dividing H, the optimizer options."""
    name = type(layer).__name__
    if layer.d_state < 2 or layer.d_state % 2:
        raise ValueError(f"{name}: d_state must be even and >= 2, got {layer.d_state}")
    if not 0 < layer.dt_min <= layer.dt_max:
        raise ValueError(f"{name}: need 0 < dt_min <= dt_max")
    if layer.activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {layer.activation!r}; valid: " + ", ".join(ACTIVATIONS)
        )
    n_ssm = layer.n_ssm
    if n_ssm is not None and (not isinstance(n_ssm, int) or n_ssm < 1 or layer.d_model % n_ssm):
        raise ValueError(
            f"{name}: n_ssm must be a positive int dividing d_model={layer.d_model} "
            f"(or None: one SSM per channel), got {n_ssm!r}"
        )
    if layer.dt_lr not in DT_LR:
        raise ValueError(f"{name}: unknown dt_lr {layer.dt_lr!r}; valid: " + ", ".join(DT_LR))
    if layer.c_lr not in C_LR:
        raise ValueError(f"{name}: unknown c_lr {layer.c_lr!r}; valid: " + ", ".join(C_LR))


def ssm_param_rules(layer: nn.Module, ssm_names) -> dict[str, params.ParamRule]:
    """The optimizer rules of S4 / S4D. state-spaces/s4 registers A, B (and P) at the SSM
    lr without weight decay (``register(..., lr)``); per task its LRA configs then set
    ``lr: {dt: null}`` (dt at the global lr, still not decayed: ``dt_lr="global"``) or a
    scalar ``lr: 0.001`` (also C at the SSM lr, decayed like the model: ``c_lr="ssm"``).
    """
    rules = dict.fromkeys(ssm_names, params.SSM)
    rules["log_dt"] = params.SSM if layer.dt_lr == "ssm" else params.NO_DECAY
    c_rule = params.DEFAULT if layer.c_lr == "global" else params.ParamRule("ssm_lr", wd_base="lr")
    rules["C_re"] = rules["C_im"] = c_rule
    return rules


def per_channel(x, d_model: int):
    """``[n_ssm, ...]`` -> ``[H, ...]``: channel h uses copy h mod n_ssm (state-spaces/s4
    ssm.py ``_get_params``: ``repeat(x, 't n -> (v t) n')``)."""
    return jnp.tile(x, (d_model // x.shape[0],) + (1,) * (x.ndim - 1))


def apply_mask(x, mask):
    """Zero ``x`` [B, L, H] where ``mask`` [B, L] is False (padding), so that a
    bidirectional kernel does not carry padding into real positions (state-spaces/s4
    modules/s4block.py:153-161 zeroes positions beyond each length the same way)."""
    if mask is None:
        return x
    mask = jnp.asarray(mask)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be [batch, length] = {x.shape[:2]}, got {mask.shape}")
    return jnp.where(mask.astype(bool)[..., None], x, jnp.zeros((), x.dtype))


def gated_output(y, activation: str, drop: nn.Dropout, output_linear: nn.Dense, train: bool):
    """S4Block's output stage: activation, dropout, Dense(2H) and a GLU back to H channels."""
    y = drop(ACTIVATIONS[activation](y), deterministic=not train)  # (B L H)
    return nn.glu(output_linear(y), axis=-1)  # (B L H)


def both_halves(v):
    """[..., N/2] -> [..., N]: the stored half and its conjugate (the full system's vector)."""
    return jnp.concatenate([v, v.conj()], axis=-1)


class S4(nn.Module):
    """S4 with A initialised to HiPPO-LegS in its normal plus low-rank form.

    Options: ``d_model`` = H, ``d_state`` = N (the state size per channel, even; N/2
    conjugate pairs are stored), ``dt_min``/``dt_max``: the range of Delta at
    initialisation, ``activation`` and ``dropout``: the output stage, ``causal=False``:
    the bidirectional layer. ``max_len`` = L: the kernel length that C~ = C (I - dA^L)
    is tied to, the longest input ``__call__`` takes. ``n_ssm``: the number of distinct
    (Lambda, P, B) shared across the H channels (None: H; state-spaces/s4's LRA configs
    use 1). ``dt_lr``, ``c_lr``: the optimizer rates of log Delta and C (``DT_LR``,
    ``C_LR``; see ``ssm_param_rules``).
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
    max_len: int = 2048
    n_ssm: int | None = None
    dt_lr: str = "ssm"
    c_lr: str = "global"

    def __post_init__(self):
        super().__post_init__()
        check_ssm_options(self)
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise ValueError(f"S4: max_len must be a positive int, got {self.max_len!r}")

    def param_rules(self) -> dict[str, params.ParamRule]:
        # SSMKernelDPLR registers P with A's lr and weight decay (ssm.py register_params).
        names = ("Lambda_log_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im")
        return ssm_param_rules(self, names)

    def weight_uses(self) -> dict[str, float]:
        """The DPLR SSM's Lambda, P, B, C build the convolution kernel: not per-token
        weights."""
        names = ("Lambda_log_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im", "C_re", "C_im")
        return dict.fromkeys(names, 0.0)

    def sequence_flops(self, length: int) -> float:
        """The FFT convolution with the SSM kernel (``fft_conv_flops``; arch/flops.py)."""
        return fft_conv_flops(length, self.d_model, bidirectional=not self.causal)

    def setup(self):
        H, N2 = self.d_model, self.d_state // 2  # N2 = N/2 stored conjugate pairs
        S = self.n_ssm or H
        self.log_dt = self.param("log_dt", log_dt_init(self.dt_min, self.dt_max), (H,))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.output_linear = nn.Dense(2 * H)
        self.drop = nn.Dropout(self.dropout)
        # HiPPO-LegS = V (Lambda - P P^*) V^* (Theorem 1); A, P and B in the eigenbasis V.
        Lambda, P, B, _ = hippo.nplr_legs(self.d_state)  # (N/2) each
        self.Lambda_log_re = self.param(
            "Lambda_log_re", broadcast_init(np.log(-Lambda.real)), (S, N2)
        )
        self.Lambda_im = self.param("Lambda_im", broadcast_init(Lambda.imag), (S, N2))
        self.P_re = self.param("P_re", broadcast_init(P.real), (S, N2))
        self.P_im = self.param("P_im", broadcast_init(P.imag), (S, N2))
        self.B_re = self.param("B_re", broadcast_init(B.real), (S, N2))
        self.B_im = self.param("B_im", broadcast_init(B.imag), (S, N2))
        # C ~ CN(0, 1) (ssm.py:182), stored as C~ = C (I - dA^L) for the init-time dA: the
        # first forward pass of state-spaces/s4 converts it so (ssm.py:683-709). A second C
        # for the backward kernel when bidirectional. Both parts come from one draw.
        dirs = 1 if self.causal else 2
        drawn = {}

        def c_tilde_init(part):
            def init(key, shape, dtype=jnp.float32):
                if "C" not in drawn:  # C_re's key draws C; C_im's init reuses it
                    re_key, im_key = jax.random.split(key)
                    c = jax.random.normal(re_key, shape) + 1j * jax.random.normal(im_key, shape)
                    c = both_halves(c * 0.5**0.5)  # (dirs H N)
                    c = c - jnp.einsum("khn,hnm->khm", c, self.dA_power())
                    drawn["C"] = c[..., :N2]  # the conjugate half is implied again
                return getattr(drawn["C"], part).astype(dtype)

            return init

        self.C_re = self.param("C_re", c_tilde_init("real"), (dirs, H, N2))
        self.C_im = self.param("C_im", c_tilde_init("imag"), (dirs, H, N2))

    def continuous(self):
        """The continuous SSM (eq. 1): A = diag(Lambda) - P P^* and B, as (Lambda, P, B),
        each ``[H, N/2]`` (the stored half of each conjugate pair)."""
        Lambda = -jnp.exp(self.Lambda_log_re) + 1j * self.Lambda_im  # (S N/2)
        P = self.P_re + 1j * self.P_im  # (S N/2)
        B = self.B_re + 1j * self.B_im  # (S N/2)
        return tuple(per_channel(v, self.d_model) for v in (Lambda, P, B))

    def discretise(self):
        """dA, dB of eq. 3 as a ``BilinearDPLR``: ``.dA(h)`` in O(N) (Theorem 2), ``.dB``;
        over the N/2 stored states with the conjugate half implied."""
        Lambda, P, B = self.continuous()
        return bilinear_dplr(Lambda, P, P, B, self.log_dt, conj_pairs=True)

    def dA_power(self):
        """dA^L, L = ``max_len``, over all N states ([h, conj h]): ``[H, N, N]``."""
        return jnp.linalg.matrix_power(self.discretise().dense_dA(), self.max_len)

    def C(self):
        """C = C~ (I - dA^L)^-1, ``[H, N/2]`` (forward direction), for the recurrence."""
        c_tilde = both_halves(self.C_re[0] + 1j * self.C_im[0])  # (H N)
        squarings = max(0, math.ceil(math.log2(C_RECOVERY_HORIZON / self.max_len)) - 1)
        c = times_inverse_one_minus(c_tilde, self.dA_power(), squarings)  # (H N)
        return c[..., : self.d_state // 2]

    def __call__(self, x, *, train: bool = False, mask=None):
        """y = K * u + D u (eq. 4-5), with K by Algorithm 1; then the gated output.

        ``mask``: [B, L] bool, True at real tokens, or None. Masked positions are zeroed
        before the convolution, so outputs at real positions do not depend on the padding
        that follows them (only the bidirectional layer could see it).
        """
        length, L = x.shape[1], self.max_len
        if length > L:
            # state-spaces/s4 doubles its kernel length instead (C~ <- C~ (I + dA^L),
            # ssm.py:683-709); a parameter cannot change here, so the length is fixed.
            raise ValueError(
                f"S4: input length {length} exceeds max_len={L}, the kernel length C~ is "
                "tied to; build the layer with a larger max_len"
            )
        x = apply_mask(x, mask)
        Lambda, P, B = self.continuous()  # (H N/2) each
        C = self.C_re + 1j * self.C_im  # (dirs H N/2): C~ of step (1), trained as such
        dt = jnp.exp(self.log_dt)[:, None]  # (H 1)
        # Algorithm 1. (2) Evaluate the truncated generating function at the roots of unity
        # omega (the first L/2 + 1: K is real), through the bilinear map z(omega), as four
        # Cauchy kernels k_ab = sum_n a_n b_n / (z - Lambda_n) over both conjugate halves.
        omega = jnp.exp(-2j * jnp.pi * jnp.arange(L // 2 + 1) / L)  # (L/2+1)
        z = (2.0 / dt) * (1.0 - omega) / (1.0 + omega)  # (H L/2+1)
        k00 = cauchy(C * B, z, Lambda, conj_pairs=True)  # (dirs H L/2+1)
        k01 = cauchy(C * P, z, Lambda, conj_pairs=True)  # (dirs H L/2+1)
        k10 = cauchy(P.conj() * B, z, Lambda, conj_pairs=True)  # (H L/2+1)
        k11 = cauchy(P.conj() * P, z, Lambda, conj_pairs=True)  # (H L/2+1)
        # (3) Woodbury: the rank-1 correction of (z - A)^-1; 2 / (1 + omega) from dB.
        K_omega = 2.0 / (1.0 + omega) * (k00 - k01 * k10 / (1.0 + k11))  # (dirs H L/2+1)
        # (4) Inverse FFT back to the kernel of length L; the input uses its first terms.
        K = jnp.fft.irfft(K_omega, n=L, axis=-1)[..., :length]  # (dirs H length)
        self.sow("intermediates", "kernel", K)  # apply(..., mutable="intermediates") shows it
        y = fft_conv(x, K[0], self.D, None if self.causal else K[1])  # (B L H)
        return gated_output(y, self.activation, self.drop, self.output_linear, train)

    def init_state(self, batch_size: int) -> S4State:
        """Zero state, with C recovered once for every step that follows (computing it in
        each step made decoding cost O(H N^3 log L) per token)."""
        require_causal(self, "init_state")
        h = jnp.zeros((batch_size, self.d_model, self.d_state // 2), jnp.complex64)
        return S4State(h, jnp.broadcast_to(self.C().astype(jnp.complex64), h.shape))

    def prefill(self, state: S4State, x):
        """h_k = dA h_{k-1} + dB u_k, y_k = 2 Re(C h_k) + D u_k (eq. 3), one step at a time
        (2 Re: the conjugate half of h; state-spaces/s4 ssm.py:1022)."""
        require_causal(self, "prefill")
        disc = self.discretise()
        # (B H N/2): from init_state; recovered here for a state built by hand without it
        C = state.C if state.C is not None else jnp.broadcast_to(self.C(), state.h.shape)

        def recurrence(h, u_k):
            h = disc.dA(h) + disc.dB * u_k[..., None]  # (B H N/2)
            return h, h

        u = rearrange(x.astype(jnp.float32), "b l h -> l b h")
        h, hs = jax.lax.scan(recurrence, state.h, u)  # (B H N/2), (L B H N/2)
        y = 2.0 * jnp.einsum("bhn,lbhn->blh", C, hs).real + self.D * x  # (B L H)
        out = gated_output(y, self.activation, self.drop, self.output_linear, False)
        return S4State(h, state.C), out

    def step(self, state: S4State, x_t):
        """One token: ``prefill``'s recurrence on a chunk of length 1."""
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)
