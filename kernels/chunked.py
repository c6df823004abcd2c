"""Chunked forms of the three recurrences: sequential across chunks, parallel within.

A sequence of length L is cut into ceil(L / T) chunks of T steps. A ``lax.scan`` carries
the recurrent state from chunk to chunk; inside a chunk all T steps are computed at once
(``associative_scan`` for the diagonal recurrences, a T x T decay matrix for WKV). The
chunk body is wrapped in ``jax.checkpoint``, so reverse-mode autodiff keeps only the
inputs and the chunk-boundary states and recomputes each chunk's interior in the
backward pass: the selective scan never keeps a ``[B, L, D, N]`` tensor alive, only one
``[B, T, D, N]`` chunk at a time.

Lengths that are not a multiple of T are padded at the end with identity steps
(``a = 1, b = 0``; ``delta = 0`` for the selective scan). WKV has no identity step (the
decay ``exp(w)`` applies at every step), so its chunk body takes the number of valid
steps and stops the state there.

Every chunk body has the signature ``body(shared, h, xs, valid) -> (h_next, ys)``
(``shared``: parameters common to all chunks; ``xs``/``ys``: ``[B, T, ...]``), which
``scan_chunks`` runs forward and ``scan_chunks_vjp`` differentiates chunk by chunk from
saved boundary states (the Pallas kernels' backward pass reuses both).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

F32 = jnp.float32
# Initial running maximum of the WKV state: exp(WKV_FLOOR - m) is exactly 0 for any real
# key, and stays finite (-inf - -inf would be NaN).
WKV_FLOOR = -1e38
# Logit of a masked (future or padded) WKV term: exp(NEG - m) == 0, gradients stay finite.
_NEG = -1e30


# ----------------------------------------------------------------------------- chunking


def check_chunk(name: str, chunk: int) -> None:
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{name}={chunk!r} must be a positive int (e.g. 64).")


def pad_time(x: Array, length: int, value: float = 0.0) -> Array:
    """Pad axis 1 of ``x`` at the end up to ``length`` with ``value``."""
    extra = length - x.shape[1]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def to_chunks(x: Array, chunk: int) -> Array:
    """[B, n * T, ...] -> [n, B, T, ...] (the leading axis is scanned over)."""
    b, length = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, length // chunk, chunk, *x.shape[2:]), 1, 0)


def from_chunks(x: Array) -> Array:
    """[n, B, T, ...] -> [B, n * T, ...]."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def valid_counts(length: int, chunk: int) -> Array:
    """Number of real (unpadded) steps in each chunk: T, ..., T, L - (n - 1) T."""
    n = -(-length // chunk)
    return jnp.minimum(chunk, length - chunk * jnp.arange(n, dtype=jnp.int32))


def scan_chunks(body: Callable, shared, h0, xs, valid: Array):
    """Run ``body`` over chunks (leading axis of ``xs``), recomputing chunks in backward.

    Returns ``(h_last, ys)`` with ``ys`` stacked on a leading chunk axis.
    """
    step = jax.checkpoint(body)
    return jax.lax.scan(lambda h, x: step(shared, h, x[0], x[1]), h0, (xs, valid))


def scan_chunks_vjp(body: Callable, shared, h_starts, xs, valid: Array, g_h_last, g_ys):
    """Reverse-mode pass of ``scan_chunks`` from saved chunk-start states.

    ``h_starts`` holds the state entering each chunk (leading chunk axis). Walking the
    chunks backwards, each chunk is recomputed from its start state and pulled back
    with ``jax.vjp``; the state cotangent flows from chunk to chunk and the cotangent
    of ``shared`` is summed. Returns ``(g_shared, g_h0, g_xs)``.
    """

    def step(carry, inputs):
        g_shared, g_h = carry
        h, x, n, g_y = inputs
        _, pull = jax.vjp(lambda s, h_, x_: body(s, h_, x_, n), shared, h, x)
        gs, gh, gx = pull((g_h, g_y))
        return (jax.tree.map(jnp.add, g_shared, gs), gh), gx

    zeros = jax.tree.map(jnp.zeros_like, shared)
    (g_shared, g_h0), g_xs = jax.lax.scan(
        step, (zeros, g_h_last), (h_starts, xs, valid, g_ys), reverse=True
    )
    return g_shared, g_h0, g_xs


def _combine_linear(left, right):
    """Composition of h -> a h + b maps (left first): the associative-scan operator."""
    a_l, b_l = left
    a_r, b_r = right
    return a_l * a_r, a_r * b_l + b_r


# ----------------------------------------------------------------------------- linear scan


def linear_chunk(shared, h, xs, valid):
    """h_t = a_t h_{t-1} + b_t over one chunk; h [B, C], a, b [B, T, C] (float32)."""
    del shared, valid  # padding steps are identities
    a_cum, b_cum = jax.lax.associative_scan(_combine_linear, xs, axis=1)
    h_all = a_cum * h[:, None] + b_cum
    return h_all[:, -1], h_all


def flatten_linear(a, b, h0):
    """Validate; -> (a, b [B, L, C] in their dtypes, h0 [B, C] float32, full shape)."""
    if a.ndim < 2:
        raise ValueError(f"linear_scan: a has shape {a.shape}; pass [batch, length, ...] arrays.")
    try:
        shape = jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"linear_scan: a {a.shape} and b {b.shape} do not broadcast; pass equal shapes."
        ) from None
    if h0 is not None and tuple(h0.shape) != (shape[0], *shape[2:]):
        raise ValueError(
            f"linear_scan: h0 has shape {h0.shape}; expected {(shape[0], *shape[2:])} "
            "(the state of one step, without the length axis)."
        )
    batch, length = shape[:2]
    flat = lambda x: jnp.broadcast_to(x, shape).reshape(batch, length, -1)
    channels = math.prod(shape[2:])
    h = jnp.zeros((batch, channels), F32) if h0 is None else h0.reshape(batch, channels)
    return flat(a), flat(b), h.astype(F32), shape


def linear_scan_chunked(
    a: Float[Array, "batch length ..."],
    b: Float[Array, "batch length ..."],
    h0: Float[Array, "batch ..."] | None = None,
    *,
    reverse: bool = False,
    chunk_size: int = 64,
) -> tuple[Float[Array, "batch length ..."], Float[Array, "batch ..."]]:
    """h_t = a_t * h_{t-1} + b_t over axis 1, chunked; returns ``(h_all, h_last)``.

    ``reverse=True`` runs from the end (h_t = a_t h_{t+1} + b_t) and ``h_last`` is the
    state after the first position. Accumulates in float32; outputs in the input dtype.
    """
    check_chunk("chunk_size", chunk_size)
    dtype = jnp.result_type(a, b)
    a, b, h, shape = flatten_linear(a, b, h0)
    a, b = a.astype(F32), b.astype(F32)
    if reverse:
        a, b = a[:, ::-1], b[:, ::-1]
    length = shape[1]
    padded = -(-length // chunk_size) * chunk_size
    xs = (
        to_chunks(pad_time(a, padded, 1.0), chunk_size),
        to_chunks(pad_time(b, padded, 0.0), chunk_size),
    )
    h_last, h_all = scan_chunks(linear_chunk, None, h, xs, valid_counts(length, chunk_size))
    h_all = from_chunks(h_all)[:, :length]
    if reverse:
        h_all = h_all[:, ::-1]
    return h_all.reshape(shape).astype(dtype), h_last.reshape(shape[:1] + shape[2:]).astype(dtype)


# ----------------------------------------------------------------------------- RWKV-4 WKV


def wkv_chunk(shared, state, xs, valid):
    """RWKV-4 WKV over one chunk (RWKV-4 paper eq. 19-20, running-max stabilised).

    With ``num/den`` the decayed sums before step t (stored as ``num * exp(max)``):
    y_t = (num_{t-1} + e^{u + k_t} v_t) / (den_{t-1} + e^{u + k_t}),
    num_t = e^{w} num_{t-1} + e^{k_t} v_t. Within the chunk, key s reaches output t
    (s < t) with log-weight (t - 1 - s) w + k_s and the incoming state with t w + max:
    a T x T matrix per channel, so the whole chunk is one masked weighted sum.
    ``valid`` steps are real; the state is taken after the last of them.
    """
    w, u = shared
    num, den, mx = state
    k, v = xs
    steps = k.shape[1]
    t = jnp.arange(steps)
    dist = (t[:, None] - 1 - t[None, :]).astype(F32)  # [T (out), T (key)]
    past = (t[None, :] < t[:, None])[None, :, :, None]
    diag = (t[None, :] == t[:, None])[None, :, :, None]
    logit = jnp.where(
        past,
        dist[None, :, :, None] * w + k[:, None],
        jnp.where(diag, u + k[:, None], _NEG),
    )  # [B, T, T, C]
    carried = t[None, :, None].astype(F32) * w + mx[:, None]  # [B, T, C]
    m = jax.lax.stop_gradient(jnp.maximum(logit.max(axis=2), carried))
    e = jnp.exp(logit - m[:, :, None])
    e_state = jnp.exp(carried - m)
    y_num = jnp.einsum("btsc,bsc->btc", e, v) + e_state * num[:, None]
    y_den = e.sum(axis=2) + e_state * den[:, None]
    y = y_num / y_den

    # State after step valid - 1: key s decayed (valid - 1 - s) times, state valid times.
    n = valid.astype(F32)
    key_logit = jnp.where(t[None, :, None] < valid, (n - 1 - t[:, None]) * w + k, _NEG)
    carried_end = n * w + mx
    m_end = jax.lax.stop_gradient(jnp.maximum(key_logit.max(axis=1), carried_end))
    e_end = jnp.exp(key_logit - m_end[:, None])
    scale = jnp.exp(carried_end - m_end)
    new_num = jnp.einsum("bsc,bsc->bc", e_end, v) + scale * num
    new_den = e_end.sum(axis=1) + scale * den
    return (new_num, new_den, m_end), y


def check_wkv(w, u, k, v, state):
    if k.ndim != 3 or k.shape != v.shape:
        raise ValueError(
            f"wkv4: k {k.shape} and v {v.shape} must both be [batch, length, channels]."
        )
    channels = k.shape[-1]
    if w.shape != (channels,) or u.shape != (channels,):
        raise ValueError(f"wkv4: w {w.shape} and u {u.shape} must be [channels] = ({channels},).")
    if state is not None:
        if len(state) != 3 or any(s.shape != (k.shape[0], channels) for s in state):
            raise ValueError(
                "wkv4: state must be a (num, den, max) tuple of [batch, channels] arrays; "
                "pass None to start from an empty state."
            )


def wkv_initial_state(batch: int, channels: int):
    """(num, den, max) before the first token."""
    zeros = jnp.zeros((batch, channels), F32)
    return zeros, zeros, jnp.full((batch, channels), WKV_FLOOR, F32)


def wkv4_chunked(
    w: Float[Array, " channels"],
    u: Float[Array, " channels"],
    k: Float[Array, "batch length channels"],
    v: Float[Array, "batch length channels"],
    state: tuple[Array, Array, Array] | None = None,
    *,
    chunk_size: int = 32,
) -> tuple[Float[Array, "batch length channels"], tuple[Array, Array, Array]]:
    """RWKV-4 WKV, chunked; ``w = -exp(time_decay)``; returns ``(y, (num, den, max))``.

    Memory per chunk is O(B T^2 C) (the decay matrix), hence the smaller default chunk.
    The state's split into ``num`` and ``max`` is not unique (the running max is held
    constant under differentiation); compare or differentiate states through their
    value, e.g. ``(num / den, log(den) + max)``.
    """
    check_chunk("chunk_size", chunk_size)
    check_wkv(w, u, k, v, state)
    batch, length, channels = k.shape
    if state is None:
        state = wkv_initial_state(batch, channels)
    state = tuple(s.astype(F32) for s in state)
    padded = -(-length // chunk_size) * chunk_size
    xs = tuple(to_chunks(pad_time(x.astype(F32), padded), chunk_size) for x in (k, v))
    shared = (w.astype(F32), u.astype(F32))
    state, y = scan_chunks(wkv_chunk, shared, state, xs, valid_counts(length, chunk_size))
    return from_chunks(y)[:, :length].astype(v.dtype), state


# ----------------------------------------------------------------------------- selective scan


def selective_chunk(shared, h, xs, valid):
    """Mamba S6 over one chunk (Mamba paper eq. 2a and 4, ZOH for A, Euler for B).

    x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t,  y_t = C_t . x_t. The
    ``[B, T, D, N]`` discretised tensors exist only for this chunk.
    """
    del valid  # padding steps have delta = 0: exp(0 A) = 1, delta B u = 0
    (a_mat,) = shared
    u, delta, b_mat, c_mat = xs
    d_a = jnp.exp(delta[..., None] * a_mat)  # [B, T, D, N]
    d_bu = (delta * u)[..., None] * b_mat[:, :, None, :]
    a_cum, b_cum = jax.lax.associative_scan(_combine_linear, (d_a, d_bu), axis=1)
    x = a_cum * h[:, None] + b_cum
    return x[:, -1], jnp.einsum("btdn,btn->btd", x, c_mat)


def check_selective(u, delta, A, B, C, D, z, delta_bias, state):
    if u.ndim != 3 or delta.shape != u.shape:
        raise ValueError(
            f"selective_scan: u {u.shape} and delta {delta.shape} must both be "
            "[batch, length, d_inner]."
        )
    batch, length, dim = u.shape
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A {A.shape} must be [d_inner={dim}, d_state].")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.shape != (batch, length, n):
            raise ValueError(
                f"selective_scan: {name} {x.shape} must be [batch, length, d_state] = "
                f"{(batch, length, n)}."
            )
    for name, x, shape in (
        ("D", D, (dim,)),
        ("delta_bias", delta_bias, (dim,)),
        ("z", z, u.shape),
        ("state", state, (batch, dim, n)),
    ):
        if x is not None and x.shape != shape:
            raise ValueError(f"selective_scan: {name} {x.shape} must have shape {shape}.")


def discretisation_step(delta, delta_bias, delta_softplus):
    """delta + bias, then softplus if asked (Mamba's dt), in float32."""
    delta = delta.astype(F32)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(F32)
    return jax.nn.softplus(delta) if delta_softplus else delta


def selective_output(y, u, D, z):
    """y + D u, gated by silu(z) (Mamba block): the parts outside the recurrence."""
    if D is not None:
        y = y + u.astype(F32) * D.astype(F32)
    if z is not None:
        y = y * jax.nn.silu(z.astype(F32))
    return y


def selective_scan_chunked(
    u: Float[Array, "batch length dim"],
    delta: Float[Array, "batch length dim"],
    A: Float[Array, "dim state"],
    B: Float[Array, "batch length state"],
    C: Float[Array, "batch length state"],
    D: Float[Array, " dim"] | None = None,
    z: Float[Array, "batch length dim"] | None = None,
    delta_bias: Float[Array, " dim"] | None = None,
    delta_softplus: bool = False,
    state: Float[Array, "batch dim state"] | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[Float[Array, "batch length dim"], Float[Array, "batch dim state"]]:
    """Mamba selective scan, chunked; returns ``(y, last_state)`` (state in float32)."""
    check_chunk("chunk_size", chunk_size)
    check_selective(u, delta, A, B, C, D, z, delta_bias, state)
    batch, length, dim = u.shape
    h = jnp.zeros((batch, dim, A.shape[1]), F32) if state is None else state.astype(F32)
    delta_eff = discretisation_step(delta, delta_bias, delta_softplus)
    padded = -(-length // chunk_size) * chunk_size
    xs = tuple(to_chunks(pad_time(x.astype(F32), padded), chunk_size) for x in (u, delta_eff, B, C))
    valid = valid_counts(length, chunk_size)
    h, y = scan_chunks(selective_chunk, (A.astype(F32),), h, xs, valid)
    y = selective_output(from_chunks(y)[:, :length], u, D, z)
    return y.astype(u.dtype), h
