"""S5's recurrence (Smith, Warrington & Linderman 2023, "Simplified State Space Layers
for Sequence Modeling"): one MIMO linear SSM with a diagonal complex state matrix,

    x_k = Lambda_bar x_{k-1} + B_bar u_k,    y_k = Re(C_tilde x_k) + D u_k    (eq. 4)

discretised by zero-order hold (eq. 6: Lambda_bar = exp(Lambda Delta), B_bar =
Lambda^-1 (Lambda_bar - I) B_tilde) or the bilinear transform, as lindermanlab/S5
``s5/ssm.py``. The scan over x_k is the diagonal linear recurrence of
``kernels.linear_scan``: S5's own parallel form is ``jax.lax.associative_scan``
("associative", section 3.2); "sequential" (``lax.scan``) is the reference and
"chunked" sequential across chunks, associative within. They run in complex64.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from kernels import dispatch
from kernels.linear_scan import linear_scan

DISCRETISATIONS = ("zoh", "bilinear")
IMPLS = dict.fromkeys(("sequential", "associative", "chunked"))  # complex-capable ones
AUTO = {"cpu": "sequential", "default": "associative"}  # as kernels.linear_scan on CPU


def discretise(
    lam: Complex[Array, " P"],
    b_tilde: Complex[Array, "P H"],
    step: Float[Array, " P"],
    method: str = "zoh",
) -> tuple[Complex[Array, " P"], Complex[Array, "P H"]]:
    """(Lambda_bar, B_bar) with one step size per state (S5 section 3.3)."""
    if method == "zoh":
        lam_bar = jnp.exp(lam * step)
        return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b_tilde
    if method == "bilinear":
        inv = 1.0 / (1.0 - step / 2.0 * lam)
        return inv * (1.0 + step / 2.0 * lam), (inv * step)[:, None] * b_tilde
    raise ValueError(f"unknown discretisation {method!r}; valid: {', '.join(DISCRETISATIONS)}")


def s5_scan(
    lam_bar: Complex[Array, " P"],
    bu: Complex[Array, "batch length P"],
    h0: Complex[Array, "batch P"] | None = None,
    *,
    reverse: bool = False,
    impl: str = "auto",
    **options,
) -> tuple[Complex[Array, "batch length P"], Complex[Array, "batch P"]]:
    """Every state x_k and the last one, for x_k = Lambda_bar x_{k-1} + (B_bar u)_k."""
    name = dispatch.resolve("s5_scan", IMPLS, impl, AUTO)
    bu = bu.astype(jnp.complex64)
    a = lam_bar.astype(jnp.complex64)[None, None]  # time-invariant: broadcast over [B, L]
    h0 = None if h0 is None else h0.astype(jnp.complex64)
    return linear_scan(a, bu, h0, reverse=reverse, impl=name, **options)
