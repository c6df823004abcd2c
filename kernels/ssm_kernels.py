"""The numerical pieces of the S4 and S4D layers (``arch/mixers/s4.py``, ``s4d.py``).

The layers build their SSM kernels themselves, step by step as in the papers; what
lives here is either shared by both or a numerical routine worth testing on its own
against NumPy (``tests/kernels/test_s4_kernels.py``):

- ``log_dt_init``, ``broadcast_init``: the initialisers of log Delta and of A, P, B;
- ``cauchy``: sum_n v_n / (z_l - lambda_n), the Cauchy kernel of S4's Algorithm 1;
- ``vandermonde``: sum_n v_n x_n^l, the Vandermonde kernel of S4D;
- ``BilinearDPLR``: the bilinear discretisation (S4 eq. 3) of A = diag(Lambda) - P Q^*,
  applied to a state in O(N) through the Woodbury identity (S4 Theorem 2), or formed
  densely for Algorithm 1's truncation C (I - dA^L);
- ``fft_conv``: y = K * u + D u (S4 eq. 4) by FFT, causal or bidirectional.

Memory: ``cauchy`` and ``vandermonde`` accumulate over the state index n (a scan), so
the peak is O(H L) rather than the O(H N L) of the naive broadcast that made early S4
blow up.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

# ------------------------------------------------------------------- initialisers


def log_dt_init(dt_min: float, dt_max: float):
    """log Delta with Delta log-uniform in [dt_min, dt_max] (state-spaces/s4's init)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype)
        return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

    return init


def broadcast_init(values):
    """The same ``values`` (e.g. a HiPPO initialisation, ``[N]``) for every channel."""
    return lambda key, shape, dtype=jnp.float32: jnp.broadcast_to(jnp.asarray(values, dtype), shape)


# ------------------------------------------------------------ kernel evaluation


def _sum_over_states(term, *xs):
    """sum_n term(x_1[..., n], x_2[..., n], ...), one n at a time (``lax.scan``)."""
    xs = tuple(jnp.moveaxis(x, -1, 0) for x in xs)  # the state axis first
    out = jax.eval_shape(term, *(x[0] for x in xs))

    def add(total, x_n):
        return total + term(*x_n), None

    total, _ = jax.lax.scan(add, jnp.zeros(out.shape, out.dtype), xs)
    return total


def cauchy(
    v: Complex[Array, "*batch H N"], z: Complex[Array, "H L"], lam: Complex[Array, "H N"]
) -> Complex[Array, "*batch H L"]:
    """sum_n v[..., n] / (z[..., l] - lam[..., n]): a Cauchy matrix-vector product."""
    return _sum_over_states(lambda v_n, lam_n: v_n[..., None] / (z - lam_n[..., None]), v, lam)


def vandermonde(
    v: Complex[Array, "*batch H N"], x: Complex[Array, "H N"], length: int
) -> Complex[Array, "*batch H L"]:
    """sum_n v[..., n] x[..., n]^l for l < length: a Vandermonde matrix-vector product.

    x^l = exp(l log x) with the principal log, so one step per n (no repeated products).
    """
    steps = jnp.arange(length)
    return _sum_over_states(
        lambda v_n, log_n: v_n[..., None] * jnp.exp(log_n[..., None] * steps), v, jnp.log(x)
    )


# ------------------------------------------------- bilinear DPLR discretisation


class BilinearDPLR(NamedTuple):
    """The bilinear discretisation (S4 eq. 3) of A = diag(Lambda) - P Q^*, ``[H, N]`` unless
    noted::

        dA = (I - dt/2 A)^-1 (I + dt/2 A),    dB = (I - dt/2 A)^-1 dt B.

    I - dt/2 A is diagonal plus rank 1, so by the Woodbury identity its inverse is too:
    (I - dt/2 A)^-1 = D - s (D P)(Q^* D) with D = diag(1 / (1 - dt/2 Lambda)) and
    s = (dt/2) / (1 + dt/2 Q^* D P). So ``dA(h)`` costs O(N) per channel (S4 Theorem 2,
    Appendix C.2), with no N x N inverse and no LAPACK call (XLA's CPU LAPACK custom call
    was seen to hang when PyTorch shares the process).
    """

    half_dt: Array  # [H, 1]: dt / 2
    lam: Array  # Lambda
    p: Array  # P
    q_conj: Array  # Q^*
    d: Array  # D = 1 / (1 - dt/2 Lambda)
    dp: Array  # D P
    scale: Array  # [H, 1]: s = (dt/2) / (1 + dt/2 Q^* D P)
    dB: Array  # (I - dt/2 A)^-1 dt B

    def solve(self, y):
        """(I - dt/2 A)^-1 y; ``y`` is ``[..., H, N]``."""
        return _woodbury_solve(self.d, self.dp, self.q_conj, self.scale, y)

    def dA(self, h):
        """dA h = (I - dt/2 A)^-1 (h + dt/2 (Lambda h - P (Q^* h))); ``h`` is ``[..., H, N]``."""
        q_h = jnp.sum(self.q_conj * h, axis=-1, keepdims=True)
        return self.solve(h + self.half_dt * (self.lam * h - self.p * q_h))

    def dense_dA(self):
        """dA as a matrix, ``[H, N, N]`` (for the kernel's truncation, not for stepping)."""
        a = jax.vmap(jnp.diag)(self.lam) - jnp.einsum("hi,hj->hij", self.p, self.q_conj)
        row = (self.q_conj * self.d)[:, None, :]
        inv = jax.vmap(jnp.diag)(self.d) - self.scale[..., None] * self.dp[:, :, None] * row
        eye = jnp.eye(self.lam.shape[-1], dtype=a.dtype)
        return inv @ (eye + self.half_dt[..., None] * a)


def bilinear_dplr(
    lam: Complex[Array, "H N"],
    p: Complex[Array, "H N"],
    q: Complex[Array, "H N"],
    b: Complex[Array, "H N"],
    log_dt: Float[Array, " H"],
) -> BilinearDPLR:
    """Discretise A = diag(Lambda) - P Q^*, B with step exp(log_dt) (once per sequence)."""
    half_dt = jnp.exp(log_dt)[:, None] / 2
    q_conj = q.conj()
    d = 1.0 / (1.0 - half_dt * lam)
    dp = d * p
    scale = half_dt / (1.0 + half_dt * jnp.sum(q_conj * dp, axis=-1, keepdims=True))
    d_b = _woodbury_solve(d, dp, q_conj, scale, 2 * half_dt * b)
    return BilinearDPLR(half_dt, lam, p, q_conj, d, dp, scale, d_b)


def _woodbury_solve(d, dp, q_conj, scale, y):
    """(I - dt/2 A)^-1 y = D y - s (D P) (Q^* D y): O(N) per channel."""
    dy = d * y
    return dy - scale * dp * jnp.sum(q_conj * dy, axis=-1, keepdims=True)


# ------------------------------------------------------------------ convolution


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
