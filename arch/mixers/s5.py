"""S5, the simplified state space layer (Smith, Warrington & Linderman, ICLR 2023,
"Simplified State Space Layers for Sequence Modeling"), as lindermanlab/S5
``s5/ssm.py``, ``s5/ssm_init.py`` and ``s5/layers.py``.

Glossary (code -> paper):

- ``d_model`` = H, the input/output features; ``d_state`` = P, the latent size of the
  one MIMO SSM shared by all H features (not one SSM per feature, as in S4);
- conjugate symmetry (always on, as every official config): P/2 eigenvalues are stored
  and the output is 2 Re(C_tilde x) (section 4.1);
- ``Lambda_re``, ``Lambda_im``: the diagonal Lambda; ``B`` = B_tilde = V^-1 B and ``C``
  = C_tilde = C V, stored as [..., 2] real/imaginary parts (eq. 5); ``D`` the feedthrough;
- ``log_step``: log Delta, one step size per state (section 3.3);
- ``blocks`` = J: Lambda starts as J copies of the HiPPO-N eigenvalues of size P/J, V
  block-diagonal (section 4.3, "block-diagonal initialisation");
- ``C_init``: "trunc_standard_normal" / "lecun_normal" (C sampled, then C V) or
  "complex_normal" (C_tilde sampled directly); ``clip_eigs``: Re(Lambda) <= -1e-4;
- ``activation``: the layer's output stage ("half_glu1", "half_glu2", "full_glu",
  "gelu"), with ``dropout``;
- ``b_lr`` and ``dt_lr``: which optimizer group B and Delta join (``opt_config`` and
  ``dt_global`` of the official trainer): "ssm" (the SSM rate, no decay),
  "ssm_decay" (B: the SSM rate with the model's decay, ``BandCdecay``), "global" (the
  model's rate and decay: ``BfastandCdecay`` for B, ``dt_global`` for Delta).

Bidirectional (``causal=False``): a second, reversed scan over the same Lambda_bar and
B_bar with its own C (``C2``), the outputs summed (``apply_ssm``, ``bidirectional``).
Padded inputs are zeroed first (S5 does not mask; see docs/fidelity.md).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from arch import params
from arch.mixers.s4 import apply_mask
from arch.protocol import require_causal
from kernels import hippo
from kernels.s5 import DISCRETISATIONS, discretise, s5_scan

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
ACTIVATIONS = ("half_glu1", "half_glu2", "full_glu", "gelu")
B_LRS = ("ssm", "ssm_decay", "global")
DT_LRS = ("ssm", "global")


class S5State(NamedTuple):
    h: jax.Array  # [B, P/2] complex64: x_k, one of each conjugate pair


def hippo_n_blocks(d_state: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(Lambda [P/2], V [P, P/2]): J copies of HiPPO-N's eigen-decomposition of size P/J,
    one of each conjugate pair (S5 ``make_DPLR_HiPPO`` and ``train.py``)."""
    lam, _, _, v = hippo.nplr_legs(d_state // blocks, b_clip=None)
    return np.tile(lam, blocks), np.kron(np.eye(blocks), v)


def _as_pair(z):
    return jnp.stack([z.real, z.imag], axis=-1).astype(jnp.float32)


def _complex(pair):
    return pair[..., 0] + 1j * pair[..., 1]


class S5(nn.Module):
    """The S5 SSM and its output stage (``SequenceLayer`` without the norm/residual)."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    d_state: int = 64
    blocks: int = 1
    C_init: str = "trunc_standard_normal"
    discretization: str = "zoh"
    dt_min: float = 0.001
    dt_max: float = 0.1
    clip_eigs: bool = False
    step_rescale: float = 1.0
    activation: str = "half_glu1"
    dropout: float = 0.0
    b_lr: str = "ssm"
    dt_lr: str = "ssm"
    causal: bool = True
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.d_state % (2 * self.blocks):
            raise ValueError(
                f"S5: d_state={self.d_state} must be divisible by 2 * blocks={2 * self.blocks} "
                "(conjugate pairs within each block)"
            )
        for name, valid in (
            ("C_init", C_INITS),
            ("discretization", DISCRETISATIONS),
            ("activation", ACTIVATIONS),
            ("b_lr", B_LRS),
            ("dt_lr", DT_LRS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"S5: unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}"
                )
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"S5: need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    def param_rules(self) -> dict:
        """The official trainer's groups (``create_train_state``): Lambda in "ssm" (Adam
        at ssm_lr, no decay); B and log_step as ``b_lr``/``dt_lr`` say; C, D and the
        output stage in "regular" (AdamW at the model's rate)."""
        b_rule = {"ssm": params.SSM, "ssm_decay": params.SSM._replace(wd_base="lr")}
        return {
            "Lambda_re": params.SSM,
            "Lambda_im": params.SSM,
            "B": b_rule.get(self.b_lr, params.DEFAULT),
            "log_step": params.SSM if self.dt_lr == "ssm" else params.DEFAULT,
        }

    def sequence_flops(self, length: int) -> float:
        """Per token and complex state element (N / 2 stored, conjugate symmetry): the
        update x = Lambda_bar x + B_bar u, a complex multiply-add (8 FLOPs); B and C are
        weights (arch/flops.py)."""
        return 8.0 * (self.d_state // 2)

    def setup(self):
        h, p_half = self.d_model, self.d_state // 2
        lam, v = hippo_n_blocks(self.d_state, self.blocks)
        v_inv = v.conj().T  # V is unitary per block
        self.Lambda_re = self.param("Lambda_re", lambda *_: jnp.asarray(lam.real, jnp.float32))
        self.Lambda_im = self.param("Lambda_im", lambda *_: jnp.asarray(lam.imag, jnp.float32))

        def b_init(key, shape=None):  # B ~ lecun_normal [P, H], then V^-1 B (init_VinvB)
            b = jax.nn.initializers.lecun_normal()(key, (self.d_state, h))
            return _as_pair(jnp.asarray(v_inv) @ b)

        self.B = self.param("B", b_init)
        self.C = self.param("C", self._c_init(v), (h, p_half, 2))
        if not self.causal:
            self.C2 = self.param("C2", self._c_init(v), (h, p_half, 2))
        self.D = self.param("D", nn.initializers.normal(1.0), (h,))
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        self.log_step = self.param(
            "log_step",
            lambda key, shape: jax.random.uniform(key, shape, jnp.float32, lo, hi),
            (p_half,),
        )
        self.drop = nn.Dropout(self.dropout)
        if self.activation == "full_glu":
            self.out1 = nn.Dense(h)
        if self.activation != "gelu":
            self.out2 = nn.Dense(h)

    def _c_init(self, v):
        if self.C_init == "complex_normal":  # C_tilde directly, N(0, 1/2) per part
            return nn.initializers.normal(math.sqrt(0.5))
        h = self.d_model

        def init(key, shape):
            if self.C_init == "lecun_normal":
                c = jax.nn.initializers.lecun_normal()(key, (h, self.d_state, 2))
            else:  # trunc_standard_normal: lecun_normal row by row
                # vmap over the row keys: the same numbers as a loop, one program to
                # compile instead of h (4.5 s -> 1 s at h = 32 on CPU)
                row = lambda k: jax.nn.initializers.lecun_normal()(k, (self.d_state, 2))  # noqa: E731
                c = jax.vmap(row)(jax.random.split(key, h))
            return _as_pair(_complex(c) @ jnp.asarray(v))  # C_tilde = C V

        return init

    def _system(self):
        lam_re = jnp.minimum(self.Lambda_re, -1e-4) if self.clip_eigs else self.Lambda_re
        lam = lam_re + 1j * self.Lambda_im
        step = self.step_rescale * jnp.exp(self.log_step)
        return discretise(lam, _complex(self.B), step, self.discretization)

    def _output_stage(self, y, train: bool):
        drop = lambda z: self.drop(z, deterministic=not train)  # noqa: E731
        if self.activation == "gelu":
            return drop(nn.gelu(y))
        hidden = drop(nn.gelu(y))
        if self.activation == "full_glu":
            out = self.out1(hidden) * jax.nn.sigmoid(self.out2(hidden))
        elif self.activation == "half_glu1":
            out = hidden * jax.nn.sigmoid(self.out2(hidden))
        else:  # half_glu2: GELU only on the gate's input
            out = y * jax.nn.sigmoid(self.out2(hidden))
        return drop(out)

    def _read(self, xs, c, u):
        """2 Re(C_tilde x_k) + D u_k."""
        return 2.0 * jnp.einsum("blp,hp->blh", xs, _complex(c)).real + self.D * u

    def __call__(self, x, *, train: bool = False, mask=None):
        u = apply_mask(x, mask).astype(jnp.float32)
        lam_bar, b_bar = self._system()
        bu = jnp.einsum("blh,ph->blp", u.astype(jnp.complex64), b_bar)
        xs, _ = s5_scan(lam_bar, bu, impl=self.impl)
        y = self._read(xs, self.C, u)
        if not self.causal:
            xs_back, _ = s5_scan(lam_bar, bu, reverse=True, impl=self.impl)
            y = y + 2.0 * jnp.einsum("blp,hp->blh", xs_back, _complex(self.C2)).real
        return self._output_stage(y.astype(x.dtype), train)

    def init_state(self, batch_size: int) -> S5State:
        require_causal(self, "init_state")
        return S5State(h=jnp.zeros((batch_size, self.d_state // 2), jnp.complex64))

    def prefill(self, state: S5State, x):
        require_causal(self, "prefill")
        u = x.astype(jnp.float32)
        lam_bar, b_bar = self._system()
        bu = jnp.einsum("blh,ph->blp", u.astype(jnp.complex64), b_bar)
        xs, h = s5_scan(lam_bar, bu, state.h, impl=self.impl)
        return S5State(h), self._output_stage(self._read(xs, self.C, u).astype(x.dtype), False)

    def step(self, state: S5State, x_t):
        require_causal(self, "step")
        state, y = self.prefill(state, x_t[:, None])
        return state, y[:, 0]
