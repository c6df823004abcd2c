"""S4 / S4D convolution kernels and the discretised matrices of their recurrent form.

Both discretise the continuous system x' = A x + B u, y = C x and return the kernel
K_l = C dA^l dB (l < L) of the equivalent convolution y = K * u.

- ``dplr_kernel``: A = diag(Lambda) - P Q^* (S4 paper, Algorithm 1): the truncated
  generating function at the L roots of unity, by Cauchy kernels and the Woodbury
  identity, then an inverse FFT. Bilinear discretisation.
- ``s4d_kernel``: diagonal A (S4D paper), Vandermonde products; ZOH or bilinear.

Memory: the Cauchy sums accumulate over the state index (a scan), so the peak is
O(H L) rather than the O(H N L) of the naive broadcast that made early S4 blow up.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

DISCRETISATIONS = ("zoh", "bilinear")


def _cauchy(v, z, lam):
    """sum_n v[h, n] / (z[h, l] - lam[h, n]) -> [H, L], accumulated over n (O(H L) memory)."""

    def add(acc, vl):
        v_n, lam_n = vl
        return acc + v_n[:, None] / (z - lam_n[:, None]), None

    init = jnp.zeros(z.shape, jnp.result_type(v, z, lam))
    out, _ = jax.lax.scan(add, init, (v.T, lam.T))
    return out


def discretize_dplr(lam, p, q, b, log_dt):
    """Bilinear: dA = (I - dt/2 A)^-1 (I + dt/2 A), dB = (I - dt/2 A)^-1 dt B (dense).

    The inverse of I - dt/2 A is the rank-1 Woodbury form of :func:`dplr_bilinear_factors`
    (S4 paper, Section 3.4), so no LAPACK call is needed: exact, and it avoids XLA's CPU
    LAPACK custom call, which was seen to hang when PyTorch shares the process.
    """
    f = dplr_bilinear_factors(lam, p, q, b, log_dt)
    a = jax.vmap(jnp.diag)(lam) - jnp.einsum("hi,hj->hij", p, q.conj())
    row = (f.q_conj * f.d)[:, None, :]
    inv = jax.vmap(jnp.diag)(f.d) - f.scale[..., None] * f.dp[:, :, None] * row
    eye = jnp.eye(lam.shape[-1], dtype=a.dtype)
    return inv @ (eye + f.half_dt[..., None] * a), f.d_b


class DPLRStep(NamedTuple):
    """What one bilinear DPLR step needs; no N x N matrix. ``[H, N]`` unless noted."""

    half_dt: Array  # [H, 1]: dt / 2
    lam: Array
    p: Array
    q_conj: Array
    d: Array  # 1 / (1 - dt/2 Lambda)
    dp: Array  # d * P
    scale: Array  # [H, 1]: (dt/2) / (1 + dt/2 Q^* D P), the rank-1 Woodbury factor
    d_b: Array  # (I - dt/2 A)^-1 dt B


def dplr_bilinear_factors(lam, p, q, b, log_dt) -> DPLRStep:
    """Precompute the bilinear DPLR step (once per sequence, not per token)."""
    half_dt = jnp.exp(log_dt)[:, None] / 2
    q_conj = q.conj()
    d = 1.0 / (1.0 - half_dt * lam)
    dp = d * p
    scale = half_dt / (1.0 + half_dt * jnp.sum(q_conj * dp, axis=-1, keepdims=True))
    d_b = _woodbury_solve(d, dp, q_conj, scale, 2 * half_dt * b)
    return DPLRStep(half_dt, lam, p, q_conj, d, dp, scale, d_b)


def _woodbury_solve(d, dp, q_conj, scale, y):
    """(I - dt/2 A)^-1 y = D y - scale (D P) (Q^* D y): O(N) per channel."""
    dy = d * y
    return dy - scale * dp * jnp.sum(q_conj * dy, axis=-1, keepdims=True)


def dplr_bilinear_step(f: DPLRStep, h, u):
    """h' = dA h + dB u in O(N) per channel, the cost of S4's recurrent view (S4 paper,
    Section 3.4): dA h = (I - dt/2 A)^-1 (h + dt/2 (Lambda h - P (Q^* h))).
    ``h``: [..., H, N] complex; ``u``: [..., H]."""
    q_h = jnp.sum(f.q_conj * h, axis=-1, keepdims=True)
    forward = h + f.half_dt * (f.lam * h - f.p * q_h)
    return _woodbury_solve(f.d, f.dp, f.q_conj, f.scale, forward) + f.d_b * u[..., None]


def dplr_kernel(
    lam: Complex[Array, "H N"],
    p: Complex[Array, "H N"],
    q: Complex[Array, "H N"],
    b: Complex[Array, "H N"],
    c: Complex[Array, "H N"],
    log_dt: Float[Array, " H"],
    length: int,
) -> Float[Array, "H L"]:
    """Re(K) for the bilinear-discretised DPLR system (S4 paper, Algorithm 1).

    ``c`` is the output matrix C itself; C~ = C (I - dA^L) (the truncation of the
    generating function at L) is formed here from the dense dA.
    """
    d_a, _ = discretize_dplr(lam, p, q, b, log_dt)
    power = jnp.linalg.matrix_power(d_a, length)
    c_tilde = c - jnp.einsum("hn,hnm->hm", c, power)
    dt = jnp.exp(log_dt)[:, None]
    omega = jnp.exp(-2j * jnp.pi * jnp.arange(length) / length)
    z = (2.0 / dt) * (1.0 - omega) / (1.0 + omega)  # bilinear image of the roots [H, L]
    k00 = _cauchy(c_tilde * b, z, lam)
    k01 = _cauchy(c_tilde * p, z, lam)
    k10 = _cauchy(q.conj() * b, z, lam)
    k11 = _cauchy(q.conj() * p, z, lam)
    # (z - Lambda + P Q^*)^-1 by the Woodbury identity; 2 / (1 + omega) from the bilinear B.
    at_roots = 2.0 / (1.0 + omega) * (k00 - k01 * k10 / (1.0 + k11))
    return jnp.fft.ifft(at_roots, n=length, axis=-1).real


def discretize_diag(a, b, log_dt, disc: str = "zoh"):
    """Diagonal A: ZOH dA = e^{dt A}, dB = (e^{dt A} - 1)/A B; bilinear as for DPLR."""
    if disc not in DISCRETISATIONS:
        raise ValueError(f"unknown discretisation {disc!r}; valid: {', '.join(DISCRETISATIONS)}")
    dt_a = jnp.exp(log_dt)[:, None] * a
    if disc == "zoh":
        d_a = jnp.exp(dt_a)
        return d_a, (d_a - 1.0) / a * b
    d_a = (1.0 + dt_a / 2) / (1.0 - dt_a / 2)
    return d_a, jnp.exp(log_dt)[:, None] * b / (1.0 - dt_a / 2)


def s4d_kernel(
    a: Complex[Array, "H N"],
    b: Complex[Array, "H N"],
    c: Complex[Array, "H N"],
    log_dt: Float[Array, " H"],
    length: int,
    disc: str = "zoh",
) -> Float[Array, "H L"]:
    """2 Re(sum_n C_n dB_n dA_n^l): the N states are conjugate-pair halves (S4D paper)."""
    d_a, d_b = discretize_diag(a, b, log_dt, disc)
    log_d_a = jnp.log(d_a)  # principal log; dA^l = exp(l log dA) (Vandermonde)
    cb = c * d_b

    def add(acc, x):
        cb_n, log_n = x
        return acc + cb_n[:, None] * jnp.exp(log_n[:, None] * jnp.arange(length)), None

    init = jnp.zeros((a.shape[0], length), cb.dtype)
    k, _ = jax.lax.scan(add, init, (cb.T, log_d_a.T))
    return 2.0 * k.real


def fft_conv(
    u: Float[Array, "B L H"],
    k: Float[Array, "H L"],
    d: Float[Array, " H"] | None = None,
    k_backward: Float[Array, "H L"] | None = None,
) -> Float[Array, "B L H"]:
    """Causal y_t = sum_{s<=t} k_s u_{t-s} (+ D u_t) by FFT, zero-padded to 2L (no wrap).

    ``k_backward`` adds the anti-causal half of S4's bidirectional layer: the same
    convolution run on the reversed sequence.
    """
    length = u.shape[1]
    n = 2 * length
    work = jnp.promote_types(u.dtype, jnp.float32)  # bf16 inputs convolve in float32
    u_f = jnp.fft.rfft(u.astype(work), n=n, axis=1)
    y = jnp.fft.irfft(u_f * jnp.fft.rfft(k, n=n, axis=-1).T, n=n, axis=1)[:, :length]
    if k_backward is not None:
        u_rev = jnp.fft.rfft(u[:, ::-1].astype(work), n=n, axis=1)
        y_b = jnp.fft.irfft(u_rev * jnp.fft.rfft(k_backward, n=n, axis=-1).T, n=n, axis=1)
        y = y + y_b[:, :length][:, ::-1]
    if d is not None:
        y = y + u * d
    return y.astype(u.dtype)
