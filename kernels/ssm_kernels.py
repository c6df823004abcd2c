"""The numerical pieces of the S4 and S4D layers (``arch/mixers/s4.py``, ``s4d.py``).

The layers build their SSM kernels themselves, step by step as in the papers; what
lives here is either shared by both or a numerical routine worth testing on its own
against NumPy (``tests/kernels/test_s4_kernels.py``):

- ``log_dt_init``, ``broadcast_init``: the initialisers of log Delta and of A, P, B;
- ``cauchy``: sum_n v_n / (z_l - lambda_n), the Cauchy kernel of S4's Algorithm 1, or
  its conjugate-symmetric form over N/2 stored conjugate pairs;
- ``vandermonde``: sum_n v_n x_n^l, the Vandermonde kernel of S4D;
- ``BilinearDPLR``: the bilinear discretisation (S4 eq. 3) of A = diag(Lambda) - P Q^*,
  applied to a state in O(N) through the Woodbury identity (S4 Theorem 2), or formed
  densely for Algorithm 1's truncation C (I - dA^L); ``conj_pairs=True``: the system
  stored as N/2 conjugate pairs (state-spaces/s4's convention);
- ``times_inverse_one_minus``: v (I - M)^-1 without LAPACK, for S4's C = C~ (I - dA^L)^-1;
- ``fft_conv``: y = K * u + D u (S4 eq. 4) by FFT, causal or bidirectional.

Memory: ``cauchy`` and ``vandermonde`` accumulate over the state index n (a scan), so
the peak is O(H L) rather than the O(H N L) of the naive broadcast that made early S4
blow up. The scan body is rematerialised (``jax.checkpoint``) so that the gradient does
not keep each n's [H, L] terms either: autodiff of the plain scan stored them all, 2.1
GiB per Cauchy sum for H = 256, N/2 = 32 at L = 16K (S4's 16K training step needed 34
GiB), against 0.13 GiB now, and the gradient runs 2.7x faster (less memory traffic).
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

    term = jax.checkpoint(term)  # recompute each term backward: no [N, ..., L] residuals

    def add(total, x_n):
        return total + term(*x_n), None

    total, _ = jax.lax.scan(add, jnp.zeros(out.shape, out.dtype), xs)
    return total


def cauchy(
    v: Complex[Array, "*batch H N"],
    z: Complex[Array, "H L"],
    lam: Complex[Array, "H N"],
    conj_pairs: bool = False,
) -> Complex[Array, "*batch H L"]:
    """sum_n v[..., n] / (z[..., l] - lam[..., n]): a Cauchy matrix-vector product.

    ``conj_pairs``: v and lam hold one of each conjugate pair, and the sum runs over both
    halves, v_n / (z - lam_n) + conj(v_n) / (z - conj(lam_n)) (state-spaces/s4
    src/models/functional/cauchy.py:39-43).
    """

    def term(v_n, lam_n):
        v_n, lam_n = v_n[..., None], lam_n[..., None]
        out = v_n / (z - lam_n)
        return out + v_n.conj() / (z - lam_n.conj()) if conj_pairs else out

    return _sum_over_states(term, v, lam)


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

    ``conj_pairs``: the ``[H, N]`` vectors hold one of each conjugate pair of a system of
    2N states whose other half is their conjugate (S4 stores N/2 of its N states so), and
    states are conjugate-symmetric too. Every inner product Q^* x over the full system is
    then 2 Re of the stored half's (state-spaces/s4 ssm.py ``_setup_linear``,
    ``_step_state_linear``), and ``dA(h)``, ``dB`` are the stored half of the full ones.
    """

    half_dt: Array  # [H, 1]: dt / 2
    lam: Array  # Lambda
    p: Array  # P
    q_conj: Array  # Q^*
    d: Array  # D = 1 / (1 - dt/2 Lambda)
    dp: Array  # D P
    scale: Array  # [H, 1]: s = (dt/2) / (1 + dt/2 Q^* D P)
    dB: Array  # (I - dt/2 A)^-1 dt B
    conj_pairs: bool = False

    def solve(self, y):
        """(I - dt/2 A)^-1 y; ``y`` is ``[..., H, N]``."""
        return _woodbury_solve(self.d, self.dp, self.q_conj, self.scale, y, self.conj_pairs)

    def dA(self, h):
        """dA h = (I - dt/2 A)^-1 (h + dt/2 (Lambda h - P (Q^* h))); ``h`` is ``[..., H, N]``."""
        q_h = _inner(self.q_conj, h, self.conj_pairs)
        return self.solve(h + self.half_dt * (self.lam * h - self.p * q_h))

    def full(self) -> BilinearDPLR:
        """The same system over all its states: the conjugate halves appended."""
        if not self.conj_pairs:
            return self
        both = lambda x: jnp.concatenate([x, x.conj()], axis=-1)  # noqa: E731
        return self._replace(
            lam=both(self.lam),
            p=both(self.p),
            q_conj=both(self.q_conj),
            d=both(self.d),
            dp=both(self.dp),
            dB=both(self.dB),
            conj_pairs=False,
        )

    def dense_dA(self):
        """dA as a matrix, ``[H, N, N]`` (for the kernel's truncation, not for stepping).

        ``conj_pairs``: the full ``[H, 2N, 2N]`` matrix, acting on [h, conj(h)].
        """
        full = self.full()
        a = jax.vmap(jnp.diag)(full.lam) - jnp.einsum("hi,hj->hij", full.p, full.q_conj)
        row = (full.q_conj * full.d)[:, None, :]
        inv = jax.vmap(jnp.diag)(full.d) - full.scale[..., None] * full.dp[:, :, None] * row
        eye = jnp.eye(full.lam.shape[-1], dtype=a.dtype)
        return inv @ (eye + full.half_dt[..., None] * a)


def bilinear_dplr(
    lam: Complex[Array, "H N"],
    p: Complex[Array, "H N"],
    q: Complex[Array, "H N"],
    b: Complex[Array, "H N"],
    log_dt: Float[Array, " H"],
    conj_pairs: bool = False,
) -> BilinearDPLR:
    """Discretise A = diag(Lambda) - P Q^*, B with step exp(log_dt) (once per sequence).

    ``conj_pairs``: the arguments hold one of each conjugate pair (see ``BilinearDPLR``).
    """
    half_dt = jnp.exp(log_dt)[:, None] / 2
    q_conj = q.conj()
    d = 1.0 / (1.0 - half_dt * lam)
    dp = d * p
    scale = half_dt / (1.0 + half_dt * _inner(q_conj, dp, conj_pairs))
    d_b = _woodbury_solve(d, dp, q_conj, scale, 2 * half_dt * b, conj_pairs)
    return BilinearDPLR(half_dt, lam, p, q_conj, d, dp, scale, d_b, conj_pairs)


def _inner(q_conj, x, conj_pairs):
    """Q^* x over the state axis (kept); over both conjugate halves if ``conj_pairs``."""
    out = jnp.sum(q_conj * x, axis=-1, keepdims=True)
    return 2 * out.real if conj_pairs else out


def _woodbury_solve(d, dp, q_conj, scale, y, conj_pairs=False):
    """(I - dt/2 A)^-1 y = D y - s (D P) (Q^* D y): O(N) per channel."""
    dy = d * y
    return dy - scale * dp * _inner(q_conj, dy, conj_pairs)


def times_inverse_one_minus(v: Array, m: Array, squarings: int) -> Array:
    """v (I - M)^-1 for ``v`` ``[..., H, N]`` and ``m`` ``[H, N, N]`` with rho(M) < 1.

    By the doubling product (I - M)^-1 = prod_{j>=0} (I + M^(2^j)), stopped after
    j = ``squarings``: the result is v (I - M)^-1 (I - M^(2^(squarings+1))), off by
    v (I - M)^-1 M^(2^(squarings+1)), relative error about rho(M)^(2^(squarings+1)).
    Matrix products only: no LAPACK solve or inverse (XLA's CPU LAPACK custom calls were
    seen to hang when PyTorch shares the process).
    """
    for _ in range(squarings + 1):
        v = v + jnp.einsum("...hn,hnm->...hm", v, m)
        m = m @ m
    return v


# ------------------------------------------------------------------ convolution


def fft_conv_flops(length: int, channels: int, bidirectional: bool = False) -> float:
    """FLOPs per token of ``fft_conv`` on the input: a real FFT of size n = 2L and its
    inverse at 2.5 n log2 n each (half a complex FFT's 5 n log2 n, Cooley-Tukey), and
    the complex product of n / 2 + 1 bins at 6 each; twice when bidirectional. The
    kernel's own FFT is per batch, not per sequence, and is left out."""
    n = 2 * length
    per_channel = (2 * 2.5 * n * math.log2(n) + 6 * (n // 2 + 1)) / length
    return (2 if bidirectional else 1) * channels * per_channel


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
