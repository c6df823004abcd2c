"""Mamba-2's state space duality (SSD) layer: the selective SSM with a scalar-times-
identity A per head (Dao & Gu 2024, "Transformers are SSMs", section 6; state-spaces/mamba
``mamba_ssm/modules/ssd_minimal.py``):

    h_t = exp(dt_t A) h_t-1 + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t

per head: x_t [P] (head_dim), B_t, C_t [N] (shared by the heads of a group), dt_t and A
scalars, h_t [P, N]. Implementations:

- "sequential": ``lax.scan`` over t, the readable reference;
- "chunked": the SSD block decomposition (section 6, Listing 1): within each chunk of
  ``chunk_size`` steps the quadratic "attention-like" form (C B^T masked by the decays),
  between chunks a linear scan over the chunk-end states. The work within chunks is
  matmuls.

Inputs: ``dt`` after the softplus and any bias (the layer computes it); everything is
accumulated in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange, repeat
from jaxtyping import Array, Float

from kernels import chunking, dispatch
from kernels.linear_scan import linear_scan

F32 = jnp.float32


def _heads(bc, n_heads: int):
    """[B, L, G, N] -> [B, L, H, N]: head h reads group h // (H / G)."""
    return repeat(bc, "b l g n -> b l (g r) n", r=n_heads // bc.shape[2])


def _sequential(x, dt, a, b, c, h0):
    def step(h, inputs):
        x_t, dt_t, b_t, c_t = inputs  # [B,H,P], [B,H], [B,H,N], [B,H,N]
        decay = jnp.exp(dt_t * a)[..., None, None]
        h = decay * h + (dt_t[..., None] * x_t)[..., None] * b_t[:, :, None, :]
        return h, jnp.einsum("bhpn,bhn->bhp", h, c_t)

    move = lambda z: jnp.moveaxis(z, 1, 0)  # noqa: E731
    h_last, ys = jax.lax.scan(step, h0, (move(x), move(dt), move(b), move(c)))
    return jnp.moveaxis(ys, 0, 1), h_last


def segsum(x):
    """[..., T] -> [..., T, T]: out[i, j] = x_{j+1} + ... + x_i for j <= i, else -inf.

    Summed by masked cumulative sums rather than differences of one cumsum, so that
    exp(segsum) stays exact for long chunks (``ssd_minimal.py``'s stable version).
    """
    length = x.shape[-1]
    x = jnp.broadcast_to(x[..., None], (*x.shape, length))  # [..., i, j] = x_i
    strict = jnp.tril(jnp.ones((length, length), bool), -1)
    sums = jnp.cumsum(jnp.where(strict, x, 0.0), axis=-2)
    return jnp.where(jnp.tril(jnp.ones((length, length), bool)), sums, -jnp.inf)


def _chunked(x, dt, a, b, c, h0, *, chunk_size: int = 64):
    chunking.check_chunk("chunk_size", chunk_size)
    length = x.shape[1]
    pad = -length % chunk_size
    # Padding steps: dt = 0 gives no input and no decay, so the state passes through.
    padded = [chunking.pad_time(z, length + pad) for z in (x * dt[..., None], dt * a, b, c)]
    xd, ad, b, c = (rearrange(z, "b (c l) ... -> b c l ...", l=chunk_size) for z in padded)
    ad = rearrange(ad, "b c l h -> b h c l")
    a_cum = jnp.cumsum(ad, axis=-1)

    # 1. within each chunk: y = (C B^T o L) (x dt), L the decays between positions
    decays = jnp.exp(segsum(ad))  # [B, H, c, l, s]
    y_diag = jnp.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", c, b, decays, xd)
    # 2. each chunk's contribution to the state at its end
    to_end = jnp.exp(a_cum[..., -1:] - a_cum)  # [B, H, c, l]
    states = jnp.einsum("bclhn,bhcl,bclhp->bchpn", b, to_end, xd)
    # 3. the recurrence over chunk ends, h_k = exp(sum of chunk k's dt A) h_k-1 + states_k,
    # as a linear scan over the L / chunk_size chunks. (ssd_minimal.py multiplies by a
    # [chunks, chunks] decay matrix instead: quadratic in the number of chunks, 16x the
    # work per token at 16K than at 1K.)
    chunk_decay = jnp.exp(rearrange(a_cum[..., -1], "b h c -> b c h"))[..., None, None]
    ends, h_last = linear_scan(chunk_decay, states, h0)
    starts = jnp.concatenate([h0[:, None], ends[:, :-1]], axis=1)
    # 4. the state entering each chunk, read out at every position of it
    y_off = jnp.einsum("bclhn,bchpn,bhcl->bclhp", c, starts, jnp.exp(a_cum))
    y = rearrange(y_diag + y_off, "b c l h p -> b (c l) h p")[:, :length]
    return y, h_last


IMPLS = {"sequential": _sequential, "chunked": _chunked}
AUTO = {"default": "chunked"}  # matmuls within chunks; the scan is the reference


def ssd(
    x: Float[Array, "batch length heads head_dim"],
    dt: Float[Array, "batch length heads"],
    a: Float[Array, " heads"],
    b: Float[Array, "batch length groups state"],
    c: Float[Array, "batch length groups state"],
    d: Float[Array, " heads"] | None = None,
    h0: Float[Array, "batch heads head_dim state"] | None = None,
    *,
    impl: str = "auto",
    **options,
) -> tuple[Float[Array, "batch length heads head_dim"], Float[Array, "batch heads head_dim state"]]:
    """y (float32) and the last state. ``a`` < 0 (A = -exp(A_log)); ``options``:
    ``chunk_size`` ("chunked")."""
    batch, length, heads, head_dim = x.shape
    if dt.shape != (batch, length, heads) or a.shape != (heads,):
        raise ValueError(
            f"ssd: dt must be [batch, length, heads]={(batch, length, heads)} and a [heads], "
            f"got {dt.shape} and {a.shape}"
        )
    if b.shape != c.shape or b.shape[:2] != (batch, length) or heads % b.shape[2]:
        raise ValueError(
            f"ssd: B and C must be [batch, length, groups, state] with groups dividing "
            f"heads={heads}; got {b.shape} and {c.shape}"
        )
    state = (batch, heads, head_dim, b.shape[3])
    h0 = jnp.zeros(state, F32) if h0 is None else h0.astype(F32)
    x32, dt32 = x.astype(F32), dt.astype(F32)
    bh, ch = _heads(b.astype(F32), heads), _heads(c.astype(F32), heads)
    y, h_last = dispatch.call(
        "ssd", IMPLS, impl, AUTO, x32, dt32, a.astype(F32), bh, ch, h0, **options
    )
    if d is not None:
        y = y + d.astype(F32)[:, None] * x32
    return y, h_last
