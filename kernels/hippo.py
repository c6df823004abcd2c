"""HiPPO-LegS and the initialisations derived from it (NumPy; computed once at init).

- ``legs(N)``: the HiPPO-LegS matrices (Gu et al. 2020; S4 paper eq. 2).
- ``nplr_legs(N)``: A = V (Lambda - P P^*) V^* (S4 paper, "Diagonalization" and
  Theorem 1): A + P P^T is normal, so it is unitarily diagonalised by V. Its
  eigenvalues come in conjugate pairs (A is real), so, as state-spaces/s4's
  ``hippo.nplr``, only one of each pair is kept: N/2 eigenvalues, and P, B restricted to
  them; the layers add the conjugate half back implicitly (2 Re(...)).
- ``s4d_init(kind, N/2)``: the diagonal S4D initialisations (Gu et al. 2022, "On the
  Parameterization and Initialization of Diagonal State Space Models", section 4):
  S4D-LegS (the diagonal part of the NPLR, with its B), S4D-Lin, S4D-Inv (B = 1).
"""

from __future__ import annotations

import numpy as np


def legs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A [N, N], B [N]: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)."""
    q = np.sqrt(2 * np.arange(n) + 1.0)
    a = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(n) + 1.0)
    return a, q.copy()


def nplr_legs(n: int, b_clip: float | None = 2.0):
    """``(Lambda [N/2], P [N/2], B [N/2], V [N, N/2])``, one of each conjugate pair, with

        A = 2 Re(V diag(Lambda) V^*) - p p^T,   p = 2 Re(V P),   b = 2 Re(V B),

    i.e. A = V_f (diag(Lambda_f) - P_f P_f^*) V_f^* over the full eigenbasis
    V_f = [V, conj(V)], Lambda_f = [Lambda, conj(Lambda)], P_f = [P, conj(P)].

    Kept half: the eigenvalues with negative imaginary part, sorted by it, as
    state-spaces/s4 src/models/hippo/hippo.py:248-255 (sort by imag, keep the first N/2).
    ``b_clip``: clamp Im(B) to [-b_clip, b_clip], as ``nplr(..., B_clip=2.0)``
    (hippo.py:274-275); the real part is untouched. None: no clipping.
    """
    if n < 2 or n % 2:
        raise ValueError(f"nplr_legs: N must be even and >= 2, got {n}")
    a, b = legs(n)
    p = np.sqrt(np.arange(n) + 0.5)
    s = a + np.outer(p, p)  # = -1/2 I + skew-symmetric: normal
    # Diagonalise through the skew part (Hermitian after multiplying by -i) for a
    # numerically unitary V. Its eigenvalues are +-omega pairs (nonzero for LegS), the
    # eigenvectors of -omega being the conjugates of those of +omega.
    skew = s + 0.5 * np.eye(n)
    eig_im, v = np.linalg.eigh(-1j * skew)  # ascending: the negative half first
    v = v[:, : n // 2]
    lam = -0.5 + 1j * eig_im[: n // 2]
    v_h = v.conj().T
    b_half = v_h @ b
    if b_clip is not None:
        b_half = b_half.real + 1j * np.clip(b_half.imag, -b_clip, b_clip)
    return lam, v_h @ p, b_half, v


def s4d_init(kind: str, n_half: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A [N/2], B [N/2])``, complex, one of each conjugate pair.

    S4D-Lin and S4D-Inv have B = 1 (state-spaces/s4 dplr.py:101); S4D-LegS takes A and B
    from the NPLR form with B clipped (``nplr_legs``; dplr.py:90-99), P dropped.
    """
    idx = np.arange(n_half)
    ones = np.ones(n_half, complex)
    if kind == "lin":
        return -0.5 + 1j * np.pi * idx, ones
    if kind == "inv":
        return -0.5 + 1j * (2 * n_half) / np.pi * ((2 * n_half) / (2 * idx + 1) - 1), ones
    if kind == "legs":
        lam, _, b, _ = nplr_legs(2 * n_half)
        return lam, b  # real part exactly -1/2
    raise ValueError(f"unknown S4D init {kind!r}; valid: legs, lin, inv")
