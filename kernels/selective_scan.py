"""Mamba's selective scan (S6), Gu & Dao 2023, Algorithm 2 and eq. (2a)-(2b), (4).

With delta = softplus(delta + delta_bias) (optional), the discretisation is ZOH for A
and Euler for B, as in the official ``selective_scan_ref``:

    dA_t = exp(delta_t * A)            [D, N]
    dB_t u_t = delta_t * B_t * u_t     [D, N]
    h_t = dA_t * h_{t-1} + dB_t u_t
    y_t = C_t . h_t + D * u_t,  then  y_t * silu(z_t)

Everything is computed in float32 and cast back to u's dtype. This file holds every
implementation of the scan itself (h and C . h; the delta step before and the D skip
and gate after are done once, in ``selective_scan``):

- "sequential": ``lax.scan``, discretising inside the body (no ``[B, L, D, N]``
  tensor); the readable reference every other one is tested against;
- "sequential_vjp": the recurrence as a ``lax.scan`` a chunk of ``chunk_size`` steps
  at a time (the discretisation and read-out whole-chunk operations) with the gradient
  written as a reverse scan of the adjoint recurrence (``_scan_bwd``), keeping one
  state per chunk and recomputing the others a chunk at a time;
- "associative": ``lax.associative_scan`` over the whole sequence (materialises dA and
  dB u as ``[B, L, D, N]``; a reference speed-up only);
- "chunked": sequential across chunks of ``chunk_size`` steps, associative within
  (``kernels.chunking``): ``[B, T, D, N]`` exists for one chunk at a time, forward and
  backward;
- "pallas": the Pallas kernel of ``kernels.pallas.selective_scan`` forward (the
  discretisation fused in), the chunk body recomputing each time block backward.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from kernels import chunking, dispatch
from kernels.pallas import selective_scan as pallas_kernel

F32 = jnp.float32


def _check(u, delta, A, B, C, D, z, delta_bias, state) -> None:
    if u.ndim != 3:
        raise ValueError(f"selective_scan: u must be [batch, length, d_inner], got {u.shape}")
    batch, length, d = u.shape
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(
            f"selective_scan: A must be [d_inner, d_state] with d_inner = {d}, got {A.shape}"
        )
    n = A.shape[1]
    want = {
        "delta": (delta, "[batch, length, d_inner]", (batch, length, d)),
        "B": (B, "[batch, length, d_state]", (batch, length, n)),
        "C": (C, "[batch, length, d_state]", (batch, length, n)),
        "D": (D, "[d_inner]", (d,)),
        "z": (z, "[batch, length, d_inner]", (batch, length, d)),
        "delta_bias": (delta_bias, "[d_inner]", (d,)),
        "state": (state, "[batch, d_inner, d_state]", (batch, d, n)),
    }
    for name, (x, layout, shape) in want.items():
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(
                f"selective_scan: {name} must have shape {layout} = {shape}, got {x.shape}"
            )


def _s6_step(A, h, u_t, d_t, b_t, c_t):
    """One step of eq. 2a/2b: [B, D, N] state; u_t, d_t [B, D]; b_t, c_t [B, N]."""
    h = jnp.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * b_t[:, None, :]
    return h, jnp.einsum("bdn,bn->bd", h, c_t)


def _sequential(u, delta, A, B, C, h0):
    """lax.scan over time; discretises inside the body, so no [B, L, D, N] tensor."""
    u, A, B, C = (x.astype(F32) for x in (u, A, B, C))
    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (u, delta, B, C))
    h_last, ys = jax.lax.scan(lambda h, x_t: _s6_step(A, h, *x_t), h0, xs)
    return jnp.swapaxes(ys, 0, 1), h_last


def _time_chunks(x, chunk: int):
    """[B, L, ...] -> [L / chunk, chunk, B, ...]: time-major, one row per chunk."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def _from_time_chunks(x):
    """The inverse of ``_time_chunks``: [L / chunk, chunk, B, ...] -> [B, L, ...]."""
    return jnp.swapaxes(x.reshape(-1, *x.shape[2:]), 0, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scan_with_vjp(u, delta, A, B, C, h0, chunk):
    y, h_last, _ = _scan_forward(u, delta, A, B, C, h0, chunk)
    return y, h_last


def _discretise(A, u_c, d_c, b_c):
    """One chunk's dA = exp(delta A) and dB u = delta B u, [T, B, D, N], time-major."""
    return jnp.exp(d_c[..., None] * A), (d_c * u_c)[..., None] * b_c[:, :, None, :]


def _linear_steps(a, b, h, *, reverse: bool = False):
    """h_t = a_t h_{t-1} + b_t along axis 0 (from the end when ``reverse``): only a
    multiply-add per step; -> (the last state, every state)."""

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h, (a, b), reverse=reverse)


def _scan_forward(u, delta, A, B, C, h0, chunk):
    """The sequential scan a chunk of ``chunk`` steps at a time, keeping only the state
    entering each chunk ([L / chunk, B, D, N]) for the backward, which recomputes the
    rest a chunk at a time. Per chunk, the discretisation and the read-out C . h are
    whole-chunk array operations; only the multiply-add of the recurrence is a loop."""

    def run_chunk(h, xs_c):
        u_c, d_c, b_c, c_c = xs_c
        h_end, hs = _linear_steps(*_discretise(A, u_c, d_c, b_c), h)
        return h_end, (jnp.einsum("tbdn,tbn->tbd", hs, c_c), h)

    xs = tuple(_time_chunks(x, chunk) for x in (u, delta, B, C))
    h_last, (ys, h_starts) = jax.lax.scan(run_chunk, h0, xs)
    return _from_time_chunks(ys), h_last, h_starts


def _scan_fwd(u, delta, A, B, C, h0, chunk):
    y, h_last, h_starts = _scan_forward(u, delta, A, B, C, h0, chunk)
    return (y, h_last), (u, delta, A, B, C, h_starts)


def _scan_bwd(chunk, residuals, cotangents):
    """The gradient through the adjoint recurrence: with g_t = dL/dh_t,

        g_t = dA_{t+1} g_{t+1} + dy_t C_t,

    a linear recurrence run backward, and every input's gradient read off g_t, h_t and
    h_{t-1}, instead of autodiff's transposed scan of the forward.

    Chunks are visited last to first; each recomputes its states forward from the saved
    state at its start (one more forward scan in all), so the backward holds [chunk, B,
    D, N] tensors at a time instead of all L steps' (as Mamba's CUDA kernel recomputes
    its states in the backward rather than storing them). Within a chunk only the two
    recurrences are loops; the gradients are whole-chunk contractions."""
    u, delta, A, B, C, h_starts = residuals
    dy, dh_last = cotangents

    def chunk_step(carry, inputs):
        g_after, d_a_sum = carry  # g_after = dL/dh at the chunk's last step, from later
        u_c, d_c, b_c, c_c, dy_c, h_start = inputs
        d_a, d_bu = _discretise(A, u_c, d_c, b_c)
        _, hs = _linear_steps(d_a, d_bu, h_start)
        h_before = jnp.concatenate([h_start[None], hs[:-1]])
        # g_t = dA_{t+1} g_{t+1} + dy_t C_t: the chunk's last step takes the carry in.
        a_next = jnp.concatenate([d_a[1:], jnp.ones_like(d_a[:1])])
        dy_c_term = dy_c[..., None] * c_c[:, :, None, :]
        dy_c_term = dy_c_term.at[-1].add(g_after)
        _, gs = _linear_steps(a_next, dy_c_term, jnp.zeros_like(h_start), reverse=True)
        g_da = gs * h_before * d_a  # through dA_t = exp(delta_t A)
        g_b = jnp.einsum("tbdn,tbn->tbd", gs, b_c)  # through delta_t B_t u_t
        grads = (
            g_b * d_c,  # u
            jnp.einsum("tbdn,dn->tbd", g_da, A) + g_b * u_c,  # delta
            jnp.einsum("tbdn,tbd->tbn", gs, d_c * u_c),  # B
            jnp.einsum("tbdn,tbd->tbn", hs, dy_c),  # C: y_t = C_t . h_t
        )
        d_a_sum = d_a_sum + jnp.einsum("tbdn,tbd->dn", g_da, d_c)
        return (gs[0] * d_a[0], d_a_sum), grads

    xs = tuple(_time_chunks(x, chunk) for x in (u, delta, B, C, dy))
    init = (dh_last, jnp.zeros_like(A))
    (d_h0, d_a), grads = jax.lax.scan(chunk_step, init, (*xs, h_starts), reverse=True)
    d_u, d_delta, d_b, d_c = (_from_time_chunks(g) for g in grads)
    return d_u, d_delta, d_a, d_b, d_c, d_h0


_scan_with_vjp.defvjp(_scan_fwd, _scan_bwd)


def _sequential_vjp(u, delta, A, B, C, h0, *, chunk_size: int = 16):
    """The sequential scan with a hand-written backward pass (``_scan_bwd``) that keeps
    one state per ``chunk_size`` steps. The time axis is padded to a multiple of it with
    delta = 0 steps (dA = 1, dB u = 0: the state passes through unchanged).

    16: 8 and 16 tie (within the noise) as the fastest of 8, 16, 32 and 64 at Mamba's
    training shape on the 2-core CPU (batch 4, 512 x 16 channels, 1K and 4K steps;
    docs/benchmarks.md), and 16 saves half the states: a chunk's [16, B, D, N] tensors
    (2 MiB each there) stay in the cache."""
    chunking.check_chunk("chunk_size", chunk_size)
    u, delta, A, B, C, h0 = (x.astype(F32) for x in (u, delta, A, B, C, h0))
    length = u.shape[1]
    chunk = max(1, min(chunk_size, length))
    pad = -length % chunk
    if pad:
        u, delta, B, C = (chunking.pad_time(x, length + pad) for x in (u, delta, B, C))
    y, h_last = _scan_with_vjp(u, delta, A, B, C, h0, chunk)
    return y[:, :length], h_last


def _chunk(shared, h, xs, valid):
    """S6 over one chunk (Mamba paper eq. 2a and 4, ZOH for A, Euler for B).

    x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t,  y_t = C_t . x_t. The
    ``[B, T, D, N]`` discretised tensors exist only for this chunk.
    """
    del valid  # padding steps have delta = 0: exp(0 A) = 1, delta B u = 0
    (a_mat,) = shared
    u, delta, b_mat, c_mat = xs
    d_a = jnp.exp(delta[..., None] * a_mat)  # [B, T, D, N]
    d_bu = (delta * u)[..., None] * b_mat[:, :, None, :]
    a_cum, b_cum = jax.lax.associative_scan(chunking.combine_linear, (d_a, d_bu), axis=1)
    x = a_cum * h[:, None] + b_cum
    return x[:, -1], jnp.einsum("btdn,btn->btd", x, c_mat)


def _associative(u, delta, A, B, C, h0):
    """The whole sequence as one chunk."""
    xs = tuple(x.astype(F32) for x in (u, delta, B, C))
    h_last, y = _chunk((A.astype(F32),), h0, xs, None)
    return y, h_last


def _chunked(u, delta, A, B, C, h0, *, chunk_size: int = 64):
    """Padding steps have delta = 0: identities (see ``_chunk``)."""
    chunking.check_chunk("chunk_size", chunk_size)
    return chunking.scan_in_chunks(_chunk, (A.astype(F32),), h0, (u, delta, B, C), chunk_size)


def _pallas(u, delta, A, B, C, h0, *, block_t: int = 64, block_d: int = 64, interpret=None):
    """``block_t``: steps between saved states (the backward recomputes one
    ``[B, block_t, D, N]`` block at a time); ``block_d``: channels per program (rounded
    to a power of two). ``interpret=None``: interpret on CPU only."""

    def forward(shared, h, xs):
        (a_mat,), (u_, delta_, b_mat, c_mat) = shared, xs
        options = {"block_t": block_t, "block_d": block_d, "interpret": interpret}
        return pallas_kernel.forward(u_, delta_, a_mat, b_mat, c_mat, h, **options)

    return chunking.recompute_vjp(forward, _chunk, block_t)((A,), h0, (u, delta, B, C))


IMPLS = {
    "sequential": _sequential,
    "sequential_vjp": _sequential_vjp,
    "associative": _associative,
    "chunked": _chunked,
    "pallas": _pallas,
}
# CPU: measured (docs/benchmarks.md): lax.scan beats the parallel forms there, and the
# hand-written backward beats autodiff's (0.66-0.78x of its forward + backward time at
# batch 4, L 1K-4K, 64 and 512 channels; whole-chunk contractions since: 0.74x again).
# Elsewhere: chunked keeps memory at chunk boundaries (no [B, L, D, N] for the backward
# pass) in plain JAX; pallas becomes the default once it is measured on a GPU.
AUTO = {"cpu": "sequential_vjp", "default": "chunked"}


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
    **options,
) -> tuple[Float[Array, "batch length d_inner"], Float[Array, "batch d_inner d_state"]]:
    """``(y, last_state)``; passing ``last_state`` back as ``state`` continues exactly.

    ``y`` has u's dtype, the state is float32. ``options`` go to the implementation:
    ``chunk_size`` ("chunked", "sequential_vjp"); ``block_t``, ``block_d``,
    ``interpret`` ("pallas").
    """
    _check(u, delta, A, B, C, D, z, delta_bias, state)
    batch, _, dim = u.shape
    h0 = jnp.zeros((batch, dim, A.shape[1]), F32) if state is None else state.astype(F32)
    # Mamba's dt: delta + bias, then softplus if asked, in float32.
    delta = delta.astype(F32)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(F32)
    if delta_softplus:
        delta = jax.nn.softplus(delta)
    y, h_last = dispatch.call("selective_scan", IMPLS, impl, AUTO, u, delta, A, B, C, h0, **options)
    # The D skip and the silu(z) gate around the scan (the Mamba block's).
    if D is not None:
        y = y + u.astype(F32) * D.astype(F32)
    if z is not None:
        y = y * jax.nn.silu(z.astype(F32))
    return y.astype(u.dtype), h_last
