"""HiPPO-LegS and the initialisations derived from it (NumPy; computed once at init).

- ``legs(N)``: the HiPPO-LegS matrices (Gu et al. 2020; S4 paper eq. 2).
- ``nplr_legs(N)``: A = V (Lambda - P P^*) V^* (S4 paper, "Diagonalization" and
  Theorem 1): A + P P^T is normal, so it is unitarily diagonalised by V.
- ``s4d_init(kind, N)``: the diagonal S4D initialisations (Gu et al. 2022, "On the
  Parameterization and Initialization of Diagonal State Space Models", section 4):
  S4D-LegS (the diagonal part of the NPLR), S4D-Lin, S4D-Inv, as N/2 conjugate-pair halves.
"""

from __future__ import annotations

import numpy as np


def legs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A [N, N], B [N]: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)."""
    q = np.sqrt(2 * np.arange(n) + 1.0)
    a = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(n) + 1.0)
    return a, q.copy()


def nplr_legs(n: int):
    """``(Lambda [N], P [N], B [N], V [N, N])`` with A = V (diag(Lambda) - P P^*) V^*.

    P and B are expressed in the eigenbasis (``V^* p``, ``V^* b``); the rank is 1.
    """
    a, b = legs(n)
    p = np.sqrt(np.arange(n) + 0.5)
    s = a + np.outer(p, p)  # = -1/2 I + skew-symmetric: normal
    # Diagonalise through the skew part (Hermitian after multiplying by -i) for a
    # numerically unitary V.
    skew = s + 0.5 * np.eye(n)
    eig_im, v = np.linalg.eigh(-1j * skew)
    lam = -0.5 + 1j * eig_im
    v_h = v.conj().T
    return lam, v_h @ p, v_h @ b, v


def s4d_init(kind: str, n_half: int) -> np.ndarray:
    """A [N/2] (complex, conjugate-pair halves with positive imaginary part)."""
    idx = np.arange(n_half)
    if kind == "lin":
        return -0.5 + 1j * np.pi * idx
    if kind == "inv":
        return -0.5 + 1j * (2 * n_half) / np.pi * ((2 * n_half) / (2 * idx + 1) - 1)
    if kind == "legs":
        lam = nplr_legs(2 * n_half)[0]
        return np.sort(lam[lam.imag > 0].imag) * 1j - 0.5  # real part is exactly -1/2
    raise ValueError(f"unknown S4D init {kind!r}; valid: legs, lin, inv")
