"""Mamba's selective scan (S6), Gu & Dao 2023, Algorithm 2 and eq. (2a)-(2b), (4).

With delta = softplus(delta + delta_bias) (optional), the discretisation is ZOH for A
and Euler for B, as in the official ``selective_scan_ref``:

    dA_t = exp(delta_t * A)            [D, N]
    dB_t u_t = delta_t * B_t * u_t     [D, N]
    h_t = dA_t * h_{t-1} + dB_t u_t
    y_t = C_t . h_t + D * u_t,  then  y_t * silu(z_t)

Everything is computed in float32 and cast back to u's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from kernels import chunked, dispatch, pallas
from kernels.linear_scan import linear_scan


def _check(u, delta, A, B, C, D, z, state):
    if u.ndim != 3:
        raise ValueError(f"selective_scan: u must be [batch, length, d_inner], got {u.shape}")
    bsz, length, d = u.shape
    n = A.shape[-1] if A.ndim == 2 else None
    want = {
        "delta": (delta, (bsz, length, d)),
        "A": (A, (d, n)),
        "B": (B, (bsz, length, n)),
        "C": (C, (bsz, length, n)),
        "D": (D, (d,)),
        "z": (z, (bsz, length, d)),
        "state": (state, (bsz, d, n)),
    }
    for name, (x, shape) in want.items():
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {x.shape}")


def prepare_delta(delta, delta_bias=None, delta_softplus=False):
    delta = delta.astype(jnp.float32)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(jnp.float32)
    return jax.nn.softplus(delta) if delta_softplus else delta


def finish(y, u, D=None, z=None):
    """The D skip and the SiLU(z) gate around the scan (float32 in, float32 out)."""
    if D is not None:
        y = y + u * D.astype(jnp.float32)
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y


def _sequential(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, state=None
):
    """lax.scan over time; discretises inside the body, so no [B, L, D, N] tensor."""
    dtype = u.dtype
    uf = u.astype(jnp.float32)
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    A, B, C = (x.astype(jnp.float32) for x in (A, B, C))
    h0 = jnp.zeros(u.shape[:1] + A.shape, jnp.float32) if state is None else state

    def step(h, inputs):
        u_t, d_t, b_t, c_t = inputs  # [B, D], [B, D], [B, N], [B, N]
        h = jnp.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * b_t[:, None, :]
        return h, jnp.einsum("bdn,bn->bd", h, c_t)

    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (uf, delta, B, C))
    h_last, ys = jax.lax.scan(step, h0.astype(jnp.float32), xs)
    y = finish(jnp.swapaxes(ys, 0, 1), uf, D, z)
    return y.astype(dtype), h_last


def _associative(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, state=None
):
    """The parallel form: materialises dA and dB*u as [B, L, D, N] (reference speed-up only)."""
    dtype = u.dtype
    uf = u.astype(jnp.float32)
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    A, B, C = (x.astype(jnp.float32) for x in (A, B, C))
    dA = jnp.exp(delta[..., None] * A)
    dBu = (delta * uf)[..., None] * B[:, :, None, :]
    hs, h_last = linear_scan(dA, dBu, state, impl="associative")
    y = finish(jnp.einsum("bldn,bln->bld", hs, C), uf, D, z)
    return y.astype(dtype), h_last


IMPLS = {
    "sequential": _sequential,
    "associative": _associative,
    "chunked": chunked.selective_scan_chunked,
    "pallas": pallas.selective_scan_pallas,
}
# CPU: measured (docs/benchmarks.md): lax.scan beats the parallel forms there.
# Elsewhere: chunked keeps memory at chunk boundaries (no [B, L, D, N] for the backward
# pass) in plain JAX; pallas becomes the default once it is measured on a GPU.
AUTO = {"cpu": "sequential", "default": "chunked"}


def selective_scan(
    u: Float[Array, "batch length d_inner"],
    delta: Float[Array, "batch length d_inner"],
    A: Float[Array, "d_inner d_state"],
    B: Float[Array, "batch length d_state"],
    C: Float[Array, "batch length d_state"],
    D: Float[Array, " d_inner"] | None = None,
    z: Float[Array, "batch length d_inner"] | None = None,
    delta_bias: Float[Array, " d_inner"] | None = None,
    delta_softplus: bool = False,
    state: Float[Array, "batch d_inner d_state"] | None = None,
    *,
    impl: str = "auto",
) -> tuple[Float[Array, "batch length d_inner"], Float[Array, "batch d_inner d_state"]]:
    """``(y, last_state)``; passing ``last_state`` back as ``state`` continues exactly."""
    _check(u, delta, A, B, C, D, z, state)
    fn = dispatch.pick("selective_scan", IMPLS, impl, AUTO)
    return fn(
        u,
        delta,
        A,
        B,
        C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        state=state,
    )
