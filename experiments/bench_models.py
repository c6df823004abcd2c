"""Model-level benchmarks: training-step time / memory vs length, and generation.

    python run.py bench train --lengths 1024,2048,4096 --out runs/bench/train
    python run.py bench train --d_model 256 --n_layers 4 --batch 4 --time_chunk 128,512
    python run.py bench generate --lengths 100,1000,10000 --out runs/bench/generate
    python run.py bench throughput --batches 1,4,16,64 --lengths 1024

Both build each architecture with ``arch.build`` at one size, time jitted calls after a
warm-up (median of repeats, ``block_until_ready``), and report ratios measured side by
side in the same run: ``growth`` = time(L) / time(L0) divided by L / L0, so 1.0 is
linear growth and about L / L0 is quadratic.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arch.time_chunks import apply_in_time_chunks, check_time_chunk
from experiments import hardware, plots, tables
from experiments.bench import time_call


def default_archs() -> list[str]:
    """The registered architectures with ``in_bench`` (every registered one is accepted)."""
    from arch.registry import names

    return names(bench=True)


def _build(name: str, vocab: int, d_model: int, n_layers: int, max_len: int):
    import arch  # the registry imports every mixer

    return arch.build(name, vocab_size=vocab, d_model=d_model, n_layers=n_layers, max_len=max_len)


def memory_budget() -> int:
    """Bytes one benchmark call may use: half of the accelerator's memory, or of the
    host's available RAM on CPU (a quadratic model at a long length is skipped, with
    its compiled size in the table, rather than killed by the OOM killer)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"] // 2
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _add_growth(rows: list[dict]) -> None:
    """growth = seconds per token at L over seconds per token at the shortest length, at
    the same batch: 1.0 is linear in L, L / L0 quadratic."""
    first: dict[tuple, float] = {}
    for r in sorted(rows, key=lambda r: r["length"]):
        if not math.isfinite(r["seconds"]):
            continue
        t0 = first.setdefault((r["arch"], r["batch"]), r["tokens_per_s"])
        r["growth"] = t0 / r["tokens_per_s"]


def _constant_state(build: Callable[[int], Any], length: int) -> bool:
    """Whether ``build(max_len)``'s recurrent state is the same at two maximum lengths
    (a Transformer's KV cache grows with ``max_len``; no recurrent form: False)."""
    from arch.utils import state_size

    size = state_size(build(length))
    return size is not None and size == state_size(build(2 * length))


def _compile_train_step(
    model, batch: int, length: int, time_chunk: int = 0, recompute: str = "dots"
):
    """The jitted Adam step at (batch, length), compiled; its args; its temp bytes.
    ``time_chunk``: the logits chunk by chunk along time (``arch.time_chunks``), each
    chunk keeping what ``recompute`` says for the backward."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    # jitted: op-by-op init compiles every op for every new length (seconds each)
    params = jax.jit(model.init)(jax.random.key(0), tokens)
    tx = optax.adam(1e-3)

    def step(params, opt_state, tokens):
        def loss(p):
            if time_chunk:
                logits = apply_in_time_chunks(model, p, tokens, time_chunk, recompute=recompute)
            else:
                logits = model.apply(p, tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    args = (params, tx.init(params), tokens)
    compiled = jax.jit(step).lower(*args).compile()
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    return compiled, args, temp


def bench_train(
    archs: Sequence[str],
    lengths: Sequence[int],
    out_dir: str,
    *,
    batch: int = 1,
    d_model: int = 64,
    n_layers: int = 2,
    vocab: int = 256,
    repeats: int = 3,
    budget: int | None = None,
    time_chunk: int | Sequence[int] = (),
    recompute: str = "dots",
) -> list[dict]:
    """Seconds per training step (forward + backward + Adam), model-FLOPs utilisation
    and compiled temp memory.

    ``time_chunk``: chunk lengths (an int: one; 0: none). At each length above a chunk,
    an architecture whose recurrent state does not grow with the context is also timed
    with its logits computed chunk by chunk along time (``arch.time_chunks``, each chunk
    keeping what ``recompute`` says for the backward; the same numbers), in the same run
    and at the same batch; the row keeps the fastest (its seconds and temp memory),
    ``time_chunk`` says which (0: one call) and ``vs_one_call`` is its time over the
    one-call step's (NaN: one call did not fit). Every step that needs more than
    ``budget`` is compiled but not run; the batch is halved only while none of them
    fits, so a chunked step that fits runs at the batch asked for even where the
    one-call step would have needed a smaller one (a batch is never traded for speed).

    ``mfu`` = the step's model FLOPs (``arch.flops.train_flops``: 3 x the analytic
    forward count) per second over the float32 matmul rate measured at the start of the
    same run (``experiments.hardware``); ``tokens_per_s`` = batch x length / seconds.
    A step that needs more than ``budget`` bytes (default :func:`memory_budget`) runs at
    the largest batch (halving) that fits, and its row's ``batch`` says so; one that
    does not fit at batch 1 is not run: its row has ``seconds`` NaN and the memory.
    ``growth`` compares seconds per token with the shortest length at the same batch
    (measured too, when a batch had to shrink).
    """
    from arch.flops import train_flops

    chunks = {time_chunk} if isinstance(time_chunk, int) else set(time_chunk)
    chunks = sorted(chunks - {0})
    for chunk in chunks:
        check_time_chunk(chunk)
    budget = memory_budget() if budget is None else budget
    machine = hardware.measure()
    rows = []

    def measure(name: str, length: int, want: int, shrink: bool = True) -> dict:
        model = _build(name, vocab, d_model, n_layers, max_len=length)
        build = functools.partial(_build, name, vocab, d_model, n_layers)
        usable = [c for c in chunks if c < length]
        usable = usable if usable and _constant_state(build, length) else []
        fits = want  # halve the batch until a step fits (the row says which batch ran)
        while True:
            steps = {0: _compile_train_step(model, fits, length)}
            steps.update(
                {c: _compile_train_step(model, fits, length, c, recompute) for c in usable}
            )
            fitting = {c: s for c, s in steps.items() if s[2] is None or s[2] <= budget}
            if fitting or not shrink or fits == 1:
                break
            fits //= 2
        for c, (_, _, temp) in steps.items():
            if c not in fitting:
                how = f" in time chunks of {c}" if c else ""
                print(f"{name} at L={length}{how}: needs {temp / 2**30:.1f} GiB > budget, not run")
        timed = {c: time_call(step, args, repeats) for c, (step, args, _) in fitting.items()}
        used = min(timed, key=timed.get) if timed else 0
        seconds = timed.get(used, math.nan)
        one_call = timed.get(0, math.nan)
        _, args, temp = steps[used]
        flops = train_flops(model, args[0], fits, length)
        mfu = flops / seconds / 1e9 / machine["matmul_gflops"]
        rows.append(
            {
                "arch": name,
                "length": length,
                "batch": fits,
                "seconds": seconds,
                "tokens_per_s": fits * length / seconds,
                "model_gflop": flops / 1e9,
                "mfu": mfu,
                "temp_mib": None if temp is None else temp / 2**20,
                "time_chunk": used,
                "vs_one_call": seconds / one_call,  # NaN: the one-call step did not fit
            }
        )
        how = f", time chunks of {used}" if used else ""
        how += f" ({seconds / one_call:.2f}x one call)" if used and math.isfinite(one_call) else ""
        print(f"{name} L={length} batch {fits}: {seconds:.4g} s, MFU {mfu:.1%}{how}", flush=True)
        return rows[-1]

    for name in archs:
        ran = [measure(name, length, batch) for length in lengths]
        # A smaller batch runs fewer tokens per scan step: its growth needs its own
        # reference at the first length, or it would measure the batch, not the length.
        done = {(r["length"], r["batch"]) for r in ran}
        shrunk = {r["batch"] for r in ran if math.isfinite(r["seconds"])} - {batch}
        for fits in sorted(shrunk, reverse=True):
            if (min(lengths), fits) not in done:
                measure(name, min(lengths), fits, shrink=False)["reference"] = True
    _add_growth(rows)
    columns = ("arch", "length", "batch", "seconds", "tokens_per_s", "growth")
    columns += ("model_gflop", "mfu", "temp_mib")
    columns += ("time_chunk", "vs_one_call") if chunks else ()
    _write(rows, columns, out_dir, "train_bench", "seconds per train step", "length")
    shape = {"batch": batch, "d_model": d_model, "n_layers": n_layers}
    shape |= {"time_chunks": chunks, "recompute": recompute} if chunks else {}
    _write_machine(machine, out_dir, **shape)
    _plot(rows, "length", "temp_mib", "compiled temp memory (MiB)", out_dir, "train_memory")
    _plot_mfu(rows, batch, os.path.join(out_dir, "train_mfu.png"))
    return rows


def bench_recompute(
    archs: Sequence[str],
    length: int,
    out_dir: str,
    *,
    chunk: int = 1024,
    batch: int = 1,
    d_model: int = 256,
    n_layers: int = 4,
    vocab: int = 256,
    repeats: int = 3,
) -> list[dict]:
    """One training step in one call, then in time chunks of ``chunk`` under each
    ``arch.time_chunks.RECOMPUTE`` policy, side by side: seconds, tokens/s, compiled
    temp memory and the time over the one-call step's (``vs_one_call``)."""
    from arch.time_chunks import RECOMPUTE

    rows = []
    for name in archs:
        model = _build(name, vocab, d_model, n_layers, max_len=length)
        one_call = None
        for recompute in ("one call", *RECOMPUTE):
            if recompute == "one call":
                compiled, args, temp = _compile_train_step(model, batch, length)
            else:
                compiled, args, temp = _compile_train_step(model, batch, length, chunk, recompute)
            seconds = time_call(compiled, args, repeats)
            one_call = one_call or seconds
            rows.append(
                {
                    "arch": name,
                    "recompute": recompute,
                    "seconds": seconds,
                    "tokens_per_s": batch * length / seconds,
                    "temp_mib": None if temp is None else temp / 2**20,
                    "vs_one_call": seconds / one_call,
                }
            )
            print(f"{name} {recompute}: {seconds:.4g} s", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    columns = ("arch", "recompute", "seconds", "tokens_per_s", "temp_mib", "vs_one_call")
    tables.write_csv(rows, columns, os.path.join(out_dir, "recompute_bench.csv"))
    print(tables.markdown(rows, columns))
    return rows


def bench_generate(
    archs: Sequence[str],
    lengths: Sequence[int],
    out_dir: str,
    *,
    batch: int = 1,
    d_model: int = 64,
    n_layers: int = 2,
    vocab: int = 256,
    repeats: int = 20,
) -> list[dict]:
    """Per-token latency with ``L`` tokens of context, and the state's size.

    The Transformer's KV cache is sized to the context (``max_len = L``), so its step
    reads all of it; a recurrent model's state does not depend on ``L``. The
    cumulative time to generate L tokens is the sum of the per-token latencies up to L
    (trapezoid over the measured lengths).
    """
    rows = []
    for name in archs:
        cumulative, previous = 0.0, None
        for length in sorted(lengths):
            model = _build(name, vocab, d_model, n_layers, max_len=length)
            tokens = jnp.zeros((batch, 1), jnp.int32)
            params = jax.jit(model.init)(jax.random.key(0), tokens)
            state = model.apply(params, batch, method="init_state")
            # The context already holds length - 1 tokens (arch/protocol.py: pos counts them).
            state = state._replace(pos=jnp.asarray(length - 1, jnp.int32))
            step = jax.jit(lambda p, s, t, model=model: model.apply(p, s, t, method="step"))
            seconds = time_call(step, (params, state, tokens[:, 0]), repeats)
            if previous is None:
                cumulative = seconds * length
            else:
                cumulative += 0.5 * (seconds + previous[1]) * (length - previous[0])
            previous = (length, seconds)
            rows.append(
                {
                    "arch": name,
                    "context": length,
                    "ms_per_token": 1e3 * seconds,
                    "cumulative_s": cumulative,
                    "state_kib": _state_kib_per_seq(state, batch),
                }
            )
    first = {}
    for r in rows:
        t0 = first.setdefault(r["arch"], r["ms_per_token"])
        r["vs_first"] = r["ms_per_token"] / t0
    columns = ("arch", "context", "ms_per_token", "vs_first", "cumulative_s", "state_kib")
    _write(
        rows, columns, out_dir, "generate_bench", "ms per token", "context", value="ms_per_token"
    )
    # The RWKV paper's figure: total time to generate the first N tokens.
    _plot(rows, "context", "cumulative_s", "cumulative seconds", out_dir, "generate_cumulative")
    return rows


def bench_throughput(
    archs: Sequence[str],
    batches: Sequence[int],
    out_dir: str,
    *,
    contexts: Sequence[int] = (1024,),
    d_model: int = 256,
    n_layers: int = 4,
    vocab: int = 256,
    repeats: int = 10,
) -> list[dict]:
    """Decoding throughput against batch size, after ``context`` tokens (the Mamba
    paper's inference-throughput comparison, Gu & Dao 2023, section 4.5).

    One decode step of the whole batch is timed; tokens/s = batch / step time. The
    Transformer's step reads its KV cache of ``context`` positions per sequence, a
    recurrent model's step its fixed state; ``state_kib_per_seq`` is that memory per
    sequence, which is what bounds the batch on an accelerator.
    """
    rows = []
    for name in archs:
        for context in contexts:
            model = _build(name, vocab, d_model, n_layers, max_len=context)
            params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
            step = jax.jit(lambda p, s, t, model=model: model.apply(p, s, t, method="step"))
            base = None
            for batch in sorted(batches):
                state = model.apply(params, batch, method="init_state")
                # The context already holds context - 1 tokens (arch/protocol.py).
                state = state._replace(pos=jnp.asarray(context - 1, jnp.int32))
                tokens = jnp.zeros((batch,), jnp.int32)
                seconds = time_call(step, (params, state, tokens), repeats)
                tokens_per_s = batch / seconds
                base = base or tokens_per_s
                rows.append(
                    {
                        "arch": name,
                        "context": context,
                        "batch": batch,
                        "ms_per_step": 1e3 * seconds,
                        "tokens_per_s": tokens_per_s,
                        "vs_batch_1": tokens_per_s / base,
                        "state_kib_per_seq": _state_kib_per_seq(state, batch),
                    }
                )
    columns = ("arch", "context", "batch", "ms_per_step", "tokens_per_s", "vs_batch_1")
    columns += ("state_kib_per_seq",)
    _write(rows, columns, out_dir, "throughput_bench", "tokens/s", "batch", value="tokens_per_s")
    return rows


def _state_kib_per_seq(state, batch: int) -> float:
    """KiB of memory one sequence carries: the per-sequence arrays (batch axis first; not
    position counters, not values derived from the parameters such as S4's C)."""
    from arch.utils import memory_leaves  # imports the registry: only when benchmarking

    return sum(np.asarray(x).nbytes for x in memory_leaves(state) if np.ndim(x) >= 1) / batch / 1024


def _plot_mfu(rows: list[dict], batch: int, path: str) -> None:
    """MFU per arch, a bar per length (growth's reference rows at a shrunk batch left
    out), the batch above a bar that ran at a smaller one."""
    groups: dict[str, dict[str, tuple[float, str]]] = {}
    for r in rows:
        cell = groups.setdefault(r["arch"], {})
        key = f"L={r['length']}"
        if key not in cell and not r.get("reference") and math.isfinite(r["mfu"]):
            cell[key] = (r["mfu"], "" if r["batch"] == batch else f"b{r['batch']}")
    if any(groups.values()):
        plots.grouped_bars(groups, "model-FLOPs utilisation", path, reference=0.5)


def _plot(rows, xkey, value, ylabel, out_dir, stem):
    series = {}
    for r in rows:
        if r.get("reference"):  # growth's reference at a shrunk batch: not on the line
            continue
        if r[value] is not None and math.isfinite(r[value]):  # skipped: not drawn
            series.setdefault(r["arch"], []).append((r[xkey], r[value]))
    if series:
        plots.lines(series, xkey, ylabel, os.path.join(out_dir, f"{stem}.png"), loglog=True)


def _write_machine(machine: dict, out_dir: str, **shape) -> None:
    """machine.json: the rates the utilisation columns divide by, and the model shape."""
    with open(os.path.join(out_dir, "machine.json"), "w") as f:
        json.dump({**machine, **shape}, f, indent=1)


def _write(rows, columns, out_dir, stem, ylabel, xkey, value="seconds"):
    os.makedirs(out_dir, exist_ok=True)
    tables.write_csv(rows, columns, os.path.join(out_dir, f"{stem}.csv"))
    _plot(rows, xkey, value, ylabel, out_dir, stem)
    print(f"backend: {jax.default_backend()}")
    print(tables.markdown(rows, columns))
