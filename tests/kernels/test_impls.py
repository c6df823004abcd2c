"""Every implementation of each recurrence == its sequential (lax.scan) reference.

``impl="chunked"`` and ``impl="pallas"`` (interpret mode on CPU) of
``kernels.linear_scan.linear_scan``, ``kernels.wkv.wkv4`` and
``kernels.selective_scan.selective_scan`` against ``impl="sequential"`` of the same
function: outputs, state and gradients, over impl x kernel x length (1, 7, 33: shorter
than, not a multiple of, and several blocks) in float32, and in bfloat16 against the
float32 upcast. (The sequential and associative impls are checked against float64
NumPy in test_linear_scan.py, test_wkv.py and test_selective_scan.py.)
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.linear_scan import linear_scan
from kernels.selective_scan import selective_scan
from kernels.wkv import wkv4

F32, BF16 = jnp.float32, jnp.bfloat16
BLOCK = 8  # chunk / time block: lengths 7 and 33 are not multiples of it

PUBLIC = {"linear_scan": linear_scan, "wkv4": wkv4, "selective_scan": selective_scan}
KERNELS = list(PUBLIC)


def reference(kernel: str):
    return partial(PUBLIC[kernel], impl="sequential")


# ----------------------------------------------------------------------------- inputs


def make_inputs(kernel: str, length: int, dtype=F32, seed: int = 0):
    """(positional args, keyword args) for ``kernel``; states are always float32 (WKV,
    selective) or the input dtype (linear scan)."""
    keys = iter(jax.random.split(jax.random.key(seed), 12))
    normal = lambda *shape: jax.random.normal(next(keys), shape, F32)
    batch = 2
    if kernel == "linear_scan":
        dims = (3, 2)  # several trailing axes
        a = jax.random.uniform(next(keys), (batch, length, *dims), F32, 0.5, 1.0)
        args = (a, normal(batch, length, *dims), normal(batch, *dims))
        return tuple(x.astype(dtype) for x in args), {}
    if kernel == "wkv4":
        c = 6
        w, u = -jnp.exp(normal(c)), normal(c)
        # The last channel's keys reach ~150 at length 33: exp(k) overflows float32 (> 88)
        # unless the running-max stabilisation works.
        k = normal(batch, length, c) * jnp.array([3.0] * (c - 1) + [60.0])
        v = normal(batch, length, c)
        state = (normal(batch, c), jnp.abs(normal(batch, c)) + 0.5, normal(batch, c))
        return (w.astype(dtype), u.astype(dtype), k.astype(dtype), v.astype(dtype), state), {}
    d, n = 6, 3  # n not a power of two: the Pallas kernel pads it
    u, delta, z = normal(batch, length, d), normal(batch, length, d), normal(batch, length, d)
    A, D, bias = -jnp.exp(normal(d, n)), normal(d), 0.5 * normal(d)
    B, C = normal(batch, length, n), normal(batch, length, n)
    floats = tuple(x.astype(dtype) for x in (u, delta, A, B, C, D, z, bias))
    return (*floats, True, normal(batch, d, n)), {}


def canonical_state(kernel: str, state):
    """WKV's (num, den, max) is defined up to a common scale: compare (num/den, log den + max)."""
    if kernel == "wkv4":
        num, den, mx = state
        return num / den, jnp.log(den) + mx
    return state


# ----------------------------------------------------------------------------- checks

_MAIN_ARG = {"linear_scan": 1, "wkv4": 3, "selective_scan": 0}  # sets the output dtype
_DIFF_ARGS = {
    "linear_scan": (0, 1, 2),
    "wkv4": (0, 1, 2, 3, 4),
    "selective_scan": (0, 1, 2, 3, 4, 5, 6, 7, 9),
}


def _outputs_and_grads(kernel, fn, args, kwargs, seed=1):
    """Outputs, and the gradient of a random projection of (y, canonical state): one jit."""
    positions = _DIFF_ARGS[kernel]

    def outputs(*diff):
        full = list(args)
        for i, x in zip(positions, diff, strict=True):
            full[i] = x
        y, state = fn(*full, **kwargs)
        return y, canonical_state(kernel, state)

    diff = tuple(args[i] for i in positions)
    leaves, tree = jax.tree.flatten(jax.eval_shape(outputs, *diff))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    proj = [jax.random.normal(k, s.shape) for k, s in zip(keys, leaves, strict=True)]

    def loss(*diff):
        out = outputs(*diff)
        pairs = zip(jax.tree.leaves(out), proj, strict=True)
        return sum(jnp.sum(o.astype(F32) * p) for o, p in pairs), out

    grad_fn = jax.grad(loss, argnums=tuple(range(len(diff))), has_aux=True)
    grads, out = jax.jit(grad_fn)(*diff)
    return out, grads


def _upcast(tree):
    return jax.tree.map(lambda x: x.astype(F32) if isinstance(x, jax.Array) else x, tree)


@functools.cache
def _reference_results(kernel, length, dtype, kwargs):
    """Reference outputs and gradients on the float32 upcast of the same inputs (cached:
    the chunked and Pallas impls compare against the same numbers)."""
    args, _ = make_inputs(kernel, length, dtype)
    return _outputs_and_grads(kernel, reference(kernel), _upcast(args), dict(kwargs))


def assert_matches_reference(kernel, fn, length, dtype=F32, **kwargs):
    """fn(*args) == reference(*args) for outputs, state and gradients."""
    args, _ = make_inputs(kernel, length, dtype)
    (y, state), grads = _outputs_and_grads(kernel, fn, args, kwargs)
    ref = _reference_results(kernel, length, dtype, tuple(sorted(kwargs.items())))
    (y_ref, state_ref), grads_ref = ref
    assert y.dtype == args[_MAIN_ARG[kernel]].dtype
    tol = 2e-5 if dtype == F32 else 2e-2
    for got, want in zip(
        jax.tree.leaves((y, state)), jax.tree.leaves((y_ref, state_ref)), strict=True
    ):
        assert got.shape == want.shape
        scale = float(jnp.max(jnp.abs(want))) + 1.0
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want), atol=tol * scale, rtol=tol
        )
    diff_args = [args[i] for i in _DIFF_ARGS[kernel]]
    for got, want, x in zip(
        jax.tree.leaves(grads), jax.tree.leaves(grads_ref), jax.tree.leaves(diff_args), strict=True
    ):
        assert got.shape == want.shape and got.dtype == x.dtype
        scale = float(jnp.max(jnp.abs(want))) + 1e-6
        err = float(jnp.max(jnp.abs(got.astype(F32) - want))) / scale
        assert err < (5 * tol if dtype == F32 else 3e-2), f"gradient relative error {err:.2e}"


def assert_split_equals_whole(kernel, fn, length=33, split=13):
    """Running [0, split) then [split, L) from the returned state == one run."""
    args, kwargs = make_inputs(kernel, length)
    y_whole, state_whole = fn(*args, **kwargs)
    time_axis = {"linear_scan": (0, 1), "wkv4": (2, 3), "selective_scan": (0, 1, 3, 4, 6)}[kernel]
    state_pos = {"linear_scan": 2, "wkv4": 4, "selective_scan": 9}[kernel]
    cut = lambda sl: [x[:, sl] if i in time_axis else x for i, x in enumerate(args)]
    first, second = cut(slice(0, split)), cut(slice(split, None))
    y1, state1 = fn(*first, **kwargs)
    second[state_pos] = state1
    y2, state2 = fn(*second, **kwargs)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], axis=1), y_whole, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        jax.tree.leaves(canonical_state(kernel, state2)),
        jax.tree.leaves(canonical_state(kernel, state_whole)),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- tests

# Pallas: small channel blocks, so that several programs run and channels get padded.
OPTIONS = {
    "chunked": {kernel: {"chunk_size": BLOCK} for kernel in KERNELS},
    "pallas": {
        "linear_scan": {"block_t": BLOCK, "block_c": 4},
        "wkv4": {"block_t": BLOCK, "block_c": 4},
        "selective_scan": {"block_t": BLOCK, "block_d": 4},
    },
}
IMPLS = list(OPTIONS)


def impl_fn(kernel: str, impl: str):
    return partial(PUBLIC[kernel], impl=impl, **OPTIONS[impl][kernel])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("length", [1, 7, 33])
def test_matches_reference_f32(impl, kernel, length):
    assert_matches_reference(kernel, impl_fn(kernel, impl), length)


@pytest.mark.parametrize("impl", IMPLS)
def test_linear_scan_reverse(impl):
    assert_matches_reference("linear_scan", impl_fn("linear_scan", impl), 33, reverse=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_reference_bf16(impl, kernel):
    assert_matches_reference(kernel, impl_fn(kernel, impl), 33, dtype=BF16)


@pytest.mark.parametrize("impl", IMPLS)
def test_wkv_state_carries_across_calls(impl):
    # WKV's (num, den, max) has many representations: continuing from ours must work.
    # (The other kernels' state in/out is covered by the reference tests above.)
    assert_split_equals_whole("wkv4", impl_fn("wkv4", impl))


def test_rejects_bad_options():
    a = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_scan(a, a, impl="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="block_t"):
        linear_scan(a, a, impl="pallas", block_t=0)
    with pytest.raises(ValueError, match="block_c"):
        wkv4(jnp.ones(3), jnp.ones(3), a, a, impl="pallas", block_c=0)
    # An option of another implementation is an error that names the valid ones.
    with pytest.raises(ValueError, match="no option chunk_size; its options: block_t, block_d"):
        selective_scan(a, a, -jnp.ones((3, 2)), a[..., :2], a[..., :2], impl="pallas", chunk_size=4)
    with pytest.raises(ValueError, match="its options: none"):
        wkv4(jnp.ones(3), jnp.ones(3), a, a, impl="sequential", block_t=4)


@pytest.mark.parametrize("length", [1, 7, 33])
@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("chunk_size", [64, 4])
def test_selective_scan_hand_written_backward_matches_reference(length, dtype, chunk_size):
    """``sequential_vjp``: outputs, state and the gradients of every input (the state
    included) from the adjoint reverse scan equal autodiff through the reference; with
    chunk 4 the backward recomputes states chunk by chunk, and 7 and 33 steps are padded
    to a whole number of chunks."""
    fn = partial(PUBLIC["selective_scan"], impl="sequential_vjp", chunk_size=chunk_size)
    assert_matches_reference("selective_scan", fn, length, dtype=dtype)
