"""Wall-clock benchmark of every implementation of every recurrence kernel vs length.

Each (kernel, impl, length) is jitted, run once to compile (warm-up), then timed
``repeats`` times with ``block_until_ready``; the median is kept. Ratios are against
``sequential`` measured in the same run (same machine, same load). Writes
``kernels_bench.csv`` and ``kernels_bench.png`` (log-log time vs length) to ``out_dir``
and prints a table of ratios.

Implementations are the rows of each kernel module's ``IMPLS`` table, each called
through the public function with ``impl=name`` (Pallas in interpret mode on CPU).
``bandwidth_frac`` is the bytes a kernel must move (``least_bytes``) per second over the
memory bandwidth measured at the start of the run (``experiments.hardware``): a scan does
O(1) arithmetic per byte, so bandwidth, not the matmul rate, is its limit.

``bench_attention`` does the same for softmax attention (XLA against the blockwise
form), with model-FLOPs utilisation instead: attention is matmul work.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from experiments.tables import markdown, write_csv  # noqa: E402
from kernels import linear_scan, selective_scan, ssd, wkv, wkv6  # noqa: E402

_MODULES = {
    "linear_scan": (linear_scan, linear_scan.linear_scan),
    "wkv4": (wkv, wkv.wkv4),
    "selective_scan": (selective_scan, selective_scan.selective_scan),
    "wkv6": (wkv6, wkv6.wkv6),
    "ssd": (ssd, ssd.ssd),
}
# Head widths of the matrix-state kernels: ``channels`` is split into heads of this size
# (RWKV-6's head_size_a 64; Mamba-2's headdim 64), or one head when channels is smaller.
HEAD_SIZE = 64
KERNELS = tuple(_MODULES)
COLUMNS = ("kernel", "impl", "length", "pass", "seconds", "vs_sequential", "bandwidth_frac")
COLUMNS += ("error",)


def kernel_impls(kernel: str) -> dict[str, Callable]:
    """{impl name: the public function with ``impl=name``} for every row of ``IMPLS``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)}.")
    module, public = _MODULES[kernel]
    return {name: partial(public, impl=name) for name in module.IMPLS}


def make_inputs(kernel: str, length: int, batch: int, channels: int, d_state: int, seed=0):
    """Random float32 arguments of ``kernel`` at a realistic scale."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    shape = (batch, length, channels)
    if kernel == "linear_scan":
        return (jax.random.uniform(k1, shape, minval=0.5, maxval=1.0), jax.random.normal(k2, shape))
    if kernel == "wkv4":
        w = -jnp.exp(jax.random.normal(k1, (channels,)))
        u = jax.random.normal(k2, (channels,))
        return (w, u, jax.random.normal(k3, shape), jax.random.normal(k4, shape))
    heads = max(1, channels // HEAD_SIZE)
    split = (batch, length, heads, channels // heads)
    if kernel == "wkv6":  # r, k, v, log w <= 0, u
        r, k, v = jax.random.normal(k1, (3, *split))
        log_w = -jnp.exp(jax.random.normal(k2, split) - 1.0)
        return (r, k, v, log_w, jax.random.normal(k3, split[2:]))
    if kernel == "ssd":  # x, dt, A < 0, B, C (one group)
        b_c = jax.random.normal(k2, (2, batch, length, 1, d_state))
        dt = jax.nn.softplus(jax.random.normal(k3, split[:3]) - 2.0)
        a = -jnp.exp(jax.random.normal(k4, (heads,)))
        return (jax.random.normal(k1, split), dt, a, b_c[0], b_c[1])
    a = -jnp.exp(jax.random.normal(k1, (channels, d_state)))
    b_c = jax.random.normal(k2, (2, batch, length, d_state))
    u = jax.random.normal(k3, shape)
    delta = jax.nn.softplus(jax.random.normal(k4, shape) - 2.0)
    return (u, delta, a, b_c[0], b_c[1])


def _runner(fn: Callable, pass_: str) -> Callable:
    if pass_ == "forward":
        return jax.jit(fn)
    if pass_ == "backward":  # forward + backward of sum(y) w.r.t. every array argument
        loss = lambda *args: jnp.sum(fn(*args)[0].astype(jnp.float32))
        return jax.jit(lambda *args: jax.grad(loss, argnums=tuple(range(len(args))))(*args))
    raise ValueError(f"unknown pass {pass_!r}; use 'forward' or 'backward'.")


def time_call(fn: Callable, args: Sequence, repeats: int) -> float:
    """Median wall-clock seconds of ``fn(*args)`` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kernels(
    lengths: Sequence[int],
    impls: Sequence[str] | None,
    out_dir: str,
    *,
    kernels: Sequence[str] = KERNELS,
    passes: Sequence[str] = ("forward",),
    batch: int = 4,
    channels: int = 64,
    d_state: int = 16,
    repeats: int = 5,
) -> list[dict]:
    """Time ``impls`` (None: all available) of ``kernels`` at each length; returns rows.

    An implementation that fails (e.g. no lowering on this backend) gets a row with
    ``seconds = nan`` and the error, rather than stopping the benchmark.
    """
    from experiments import hardware

    machine = hardware.measure(bandwidth=True)
    rows = []
    for kernel in kernels:
        table = kernel_impls(kernel)
        names = list(table) if impls is None else list(impls)
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(f"{kernel}: unknown impl(s) {unknown}; available: {', '.join(table)}.")
        for length in lengths:
            args = make_inputs(kernel, length, batch, channels, d_state)
            for pass_ in passes:
                for name in names:
                    row = {"kernel": kernel, "impl": name, "length": length, "pass": pass_}
                    try:
                        row["seconds"] = time_call(_runner(table[name], pass_), args, repeats)
                        row["bandwidth_frac"] = (
                            least_bytes(table[name], args, pass_)
                            / row["seconds"]
                            / (machine["bandwidth_gbs"] * 1e9)
                        )
                    except Exception as err:  # noqa: BLE001 - recorded in the table
                        row["seconds"], row["error"] = (
                            math.nan,
                            f"{type(err).__name__}: {err}"[:200],
                        )
                    rows.append(row)
    _add_ratios(rows)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(rows, COLUMNS, os.path.join(out_dir, "kernels_bench.csv"))
    plot(rows, os.path.join(out_dir, "kernels_bench.png"))
    print(f"backend: {jax.default_backend()}; batch {batch}, channels {channels}, N {d_state}")
    print(markdown(rows, COLUMNS[:-1]))
    print(f"bandwidth_frac: least bytes moved / seconds / {machine['bandwidth_gbs']:.1f} GB/s")
    return rows


def least_bytes(fn: Callable, args: Sequence, pass_: str) -> int:
    """Bytes a kernel must move at least: its inputs read and its outputs written
    (forward), or its inputs read and their gradients written (forward + backward).
    A scan does O(1) work per byte, so this over the measured bandwidth is its limit."""
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    if pass_ == "backward":
        return 2 * size(args)
    return size(args) + size(jax.eval_shape(fn, *args))


ATTENTION_COLUMNS = ("impl", "length", "pass", "seconds", "vs_xla", "gflop_s", "mfu")


def bench_attention(
    lengths: Sequence[int],
    out_dir: str,
    *,
    impls: Sequence[str] = ("xla", "blockwise"),
    passes: Sequence[str] = ("forward", "backward"),
    batch: int = 4,
    heads: int = 4,
    head_dim: int = 64,
    repeats: int = 3,
) -> list[dict]:
    """Causal self-attention, each impl of ``kernels.attention`` at each length.

    ``gflop_s`` counts the model FLOPs of the useful (causal) half, 4 x head_dim per
    (query, visible key) pair per head, 3x that for forward + backward (arch/flops.py);
    ``mfu`` divides by the float32 matmul rate measured at the start of the run. An impl
    whose [L, L] scores would not fit in half the memory is skipped (NaN).
    """
    from experiments import hardware
    from experiments.bench_models import memory_budget
    from kernels.attention import attention

    machine, budget, rows = hardware.measure(), memory_budget(), []
    for length in lengths:
        keys = jax.random.split(jax.random.key(0), 3)
        q, k, v = (jax.random.normal(kk, (batch, length, heads, head_dim)) for kk in keys)
        forward = 4.0 * head_dim * batch * heads * length * (length + 1) / 2
        for pass_, name in itertools.product(passes, impls):
            row = {"kernel": "attention", "impl": name, "length": length, "pass": pass_}
            square = 3 * 4 * batch * heads * length**2  # scores, probabilities, gradient
            if name != "blockwise" and square > budget:
                row["seconds"] = math.nan
            else:
                fn = lambda q, k, v, name=name: (attention(q, k, v, causal=True, impl=name),)  # noqa: E731
                row["seconds"] = time_call(_runner(fn, pass_), (q, k, v), repeats)
            flops = forward * (3 if pass_ == "backward" else 1)
            row["gflop_s"] = flops / row["seconds"] / 1e9
            row["mfu"] = row["gflop_s"] / machine["matmul_gflops"]
            rows.append(row)
    _add_ratios(rows, base_impl="xla")
    os.makedirs(out_dir, exist_ok=True)
    write_csv(rows, ATTENTION_COLUMNS, os.path.join(out_dir, "attention_bench.csv"))
    plot(rows, os.path.join(out_dir, "attention_bench.png"))
    print(f"batch {batch}, {heads} heads of {head_dim}, causal, float32")
    print(markdown(rows, ATTENTION_COLUMNS))
    return rows


def _add_ratios(rows: list[dict], base_impl: str = "sequential") -> None:
    """vs_<base_impl> = seconds / seconds of ``base_impl`` at the same kernel/length/pass
    (None where either was not measured)."""
    base = {
        (r["kernel"], r["length"], r["pass"]): r["seconds"] for r in rows if r["impl"] == base_impl
    }
    for r in rows:
        ref = base.get((r["kernel"], r["length"], r["pass"]))
        ok = ref is not None and ref > 0 and not math.isnan(r["seconds"])
        r[f"vs_{base_impl}"] = r["seconds"] / ref if ok else None


def plot(rows: Sequence[dict], path: str) -> str:
    """Log-log seconds vs length, one line per impl; a row of panels per pass."""
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    passes = list(dict.fromkeys(r["pass"] for r in rows))
    fig, axes = plt.subplots(
        len(passes), len(kernels), figsize=(4.5 * len(kernels), 3.6 * len(passes)), squeeze=False
    )
    for (i, pass_), (j, kernel) in itertools.product(enumerate(passes), enumerate(kernels)):
        ax = axes[i][j]
        for impl in dict.fromkeys(r["impl"] for r in rows):
            pts = sorted(
                (r["length"], r["seconds"])
                for r in rows
                if (r["kernel"], r["pass"], r["impl"]) == (kernel, pass_, impl)
                and not math.isnan(r["seconds"])
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=impl)
        ax.set(xscale="log", yscale="log", xlabel="length", ylabel="seconds")
        ax.set_title(f"{kernel} ({pass_})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
