"""RWKV-4's WKV operator (Peng et al. 2023, eq. 14), in the numerically stable form.

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})

with ``w = -exp(time_decay) < 0`` (applied by the caller) and ``u = time_first``. The
state is ``(num, den, max)``: the two sums scaled by ``exp(-max)``, so no exponential
ever overflows, whatever the size of the keys (the official CUDA kernel's form).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from kernels import chunked, dispatch, pallas

NEG = -1e38  # "log of zero" for an empty history; finite so that NEG - NEG == 0


def empty_state(batch: int, channels: int):
    zeros = jnp.zeros((batch, channels), jnp.float32)
    return zeros, zeros, jnp.full((batch, channels), NEG, jnp.float32)


def _check(w, u, k, v, state):
    if k.ndim != 3 or v.shape != k.shape:
        raise ValueError(
            f"wkv4: k and v must both be [batch, length, channels], got {k.shape} and {v.shape}"
        )
    c = k.shape[-1]
    if w.shape != (c,) or u.shape != (c,):
        raise ValueError(f"wkv4: w and u must be [channels] = ({c},), got {w.shape}, {u.shape}")
    if state is not None and any(s.shape != (k.shape[0], c) for s in state):
        raise ValueError(
            f"wkv4: state must be three [batch, channels] arrays, got {[s.shape for s in state]}"
        )


def _sequential(w, u, k, v, state=None):
    """lax.scan over time; the readable reference."""
    dtype = v.dtype
    w, u, k, v = (x.astype(jnp.float32) for x in (w, u, k, v))
    state = empty_state(k.shape[0], k.shape[-1]) if state is None else state

    def step(carry, kv):
        num, den, mx = carry
        k_t, v_t = kv
        # Output: the history plus the current token with its bonus u.
        q = jnp.maximum(mx, u + k_t)
        e_hist, e_now = jnp.exp(mx - q), jnp.exp(u + k_t - q)
        y = (e_hist * num + e_now * v_t) / (e_hist * den + e_now)
        # State: decay the history by e^w, then add the current token (no bonus).
        decayed = mx + w
        q = jnp.maximum(decayed, k_t)
        e_hist, e_now = jnp.exp(decayed - q), jnp.exp(k_t - q)
        return (e_hist * num + e_now * v_t, e_hist * den + e_now, q), y

    xs = (jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1))
    state, ys = jax.lax.scan(step, tuple(s.astype(jnp.float32) for s in state), xs)
    return jnp.swapaxes(ys, 0, 1).astype(dtype), state


def _associative(w, u, k, v, state=None):
    """Parallel over time with ``lax.associative_scan``.

    A segment of tokens, seen from an empty history, is summarised by its length n and
    its (num, den, max). Appending segment R after segment L decays L by e^{w n_R}:
    max = max(max_L + w n_R, max_R), num = num_L e^{max_L + w n_R - max} +
    num_R e^{max_R - max} (den alike): a log-space linear recurrence, hence associative.
    The initial state enters as a first segment of length 0.
    """
    dtype = v.dtype
    w, u, k, v = (x.astype(jnp.float32) for x in (w, u, k, v))
    bsz, _, c = k.shape
    num0, den0, max0 = empty_state(bsz, c) if state is None else state
    n = jnp.concatenate([jnp.zeros((bsz, 1, c)), jnp.ones_like(k)], axis=1)
    num = jnp.concatenate([num0[:, None], v], axis=1)
    den = jnp.concatenate([den0[:, None], jnp.ones_like(k)], axis=1)
    mx = jnp.concatenate([max0[:, None], k], axis=1)

    def combine(left, right):
        n_l, num_l, den_l, max_l = left
        n_r, num_r, den_r, max_r = right
        shifted = max_l + w * n_r
        q = jnp.maximum(shifted, max_r)
        e_l, e_r = jnp.exp(shifted - q), jnp.exp(max_r - q)
        return n_l + n_r, e_l * num_l + e_r * num_r, e_l * den_l + e_r * den_r, q

    _, nums, dens, maxs = jax.lax.associative_scan(combine, (n, num, den, mx), axis=1)
    # Token t reads the history before it (inclusive state t-1, i.e. index t here).
    h_num, h_den, h_max = nums[:, :-1], dens[:, :-1], maxs[:, :-1]
    q = jnp.maximum(h_max, u + k)
    e_hist, e_now = jnp.exp(h_max - q), jnp.exp(u + k - q)
    y = (e_hist * h_num + e_now * v) / (e_hist * h_den + e_now)
    return y.astype(dtype), (nums[:, -1], dens[:, -1], maxs[:, -1])


IMPLS = {
    "sequential": _sequential,
    "associative": _associative,
    "chunked": chunked.wkv4_chunked,
    "pallas": pallas.wkv4_pallas,
}
# CPU: lax.scan is fastest (docs/benchmarks.md). Elsewhere: chunked, until the Pallas
# kernel is measured on a GPU.
AUTO = {"cpu": "sequential", "default": "chunked"}


def wkv4(
    w: Float[Array, " channels"],
    u: Float[Array, " channels"],
    k: Float[Array, "batch length channels"],
    v: Float[Array, "batch length channels"],
    state: tuple[Float[Array, "batch channels"], ...] | None = None,
    *,
    impl: str = "auto",
) -> tuple[Float[Array, "batch length channels"], tuple[Float[Array, "batch channels"], ...]]:
    """``(wkv, state)``; passing ``state`` back continues the sequence exactly."""
    _check(w, u, k, v, state)
    fn = dispatch.pick("wkv4", IMPLS, impl, AUTO)
    return fn(w, u, k, v, state)
