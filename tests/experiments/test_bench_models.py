"""The model benchmarks run end to end at tiny size and write their CSV and PNG."""

import csv
import json
import math
import os

import pytest

from experiments import bench_models


def test_train_and_generate_benchmarks_write_tables(tmp_path):
    rows = bench_models.bench_train(
        ["s4d", "transformer"], [8, 16], str(tmp_path), d_model=8, n_layers=1, repeats=1
    )
    assert {r["arch"] for r in rows} == {"s4d", "transformer"}
    assert all(r["seconds"] > 0 for r in rows)
    assert [r["growth"] for r in rows if r["length"] == 8] == [1.0, 1.0]
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["matmul_gflops"] > 0 and machine["d_model"] == 8
    for r in rows:  # MFU: the analytic model FLOPs per second over the measured matmul rate
        assert r["model_gflop"] > 0
        assert r["mfu"] == pytest.approx(r["model_gflop"] / r["seconds"] / machine["matmul_gflops"])
        assert r["tokens_per_s"] == pytest.approx(r["length"] / r["seconds"])
    rows = bench_models.bench_generate(
        ["s4d", "transformer"], [8, 32], str(tmp_path), d_model=8, n_layers=1, repeats=2
    )
    state = {(r["arch"], r["context"]): r["state_kib"] for r in rows}
    assert state[("s4d", 8)] == state[("s4d", 32)]  # recurrent state: constant size
    assert state[("transformer", 32)] > state[("transformer", 8)]  # KV cache grows
    for r in rows:  # cumulative time: the per-token time summed over the context
        assert r["cumulative_s"] >= r["ms_per_token"] / 1e3 * min(8, r["context"]) * 0.99
    stems = ("train_bench", "train_memory", "train_mfu", "generate_bench", "generate_cumulative")
    for stem in stems:
        assert os.path.getsize(tmp_path / f"{stem}.png") > 0
    for stem in ("train_bench", "generate_bench"):
        with open(tmp_path / f"{stem}.csv") as f:
            assert len(list(csv.DictReader(f))) == 4


def test_train_benchmark_skips_what_does_not_fit(tmp_path):
    rows = bench_models.bench_train(
        ["transformer"], [8], str(tmp_path), d_model=8, n_layers=1, repeats=1, budget=1
    )
    assert math.isnan(rows[0]["seconds"]) and rows[0]["temp_mib"] > 0


def test_train_benchmark_halves_the_batch_until_the_step_fits(tmp_path):
    model = bench_models._build("rwkv", 256, 8, 1, max_len=64)
    temp = {b: bench_models._compile_train_step(model, b, 64)[2] for b in (1, 2, 4)}
    assert temp[1] < temp[2] < temp[4]
    rows = bench_models.bench_train(
        ["rwkv"], [64], str(tmp_path), batch=4, d_model=8, n_layers=1, repeats=1,
        budget=temp[2],
    )  # fmt: skip
    assert rows[0]["batch"] == 2 and rows[0]["seconds"] > 0
    assert rows[0]["tokens_per_s"] == pytest.approx(2 * 64 / rows[0]["seconds"])
    # growth compares like with like: the shortest length at the shrunk batch is measured
    rows = bench_models.bench_train(
        ["rwkv"], [32, 64], str(tmp_path), batch=4, d_model=8, n_layers=1, repeats=1,
        budget=temp[2],
    )  # fmt: skip
    shapes = [(r["length"], r["batch"]) for r in rows]
    assert shapes == [(32, 4), (64, 2), (32, 2)]
    assert [bool(r.get("reference")) for r in rows] == [False, False, True]
    by_shape = {(r["length"], r["batch"]): r for r in rows}
    assert by_shape[(32, 2)]["growth"] == 1.0 == by_shape[(32, 4)]["growth"]
    assert by_shape[(64, 2)]["growth"] == pytest.approx(
        by_shape[(32, 2)]["tokens_per_s"] / by_shape[(64, 2)]["tokens_per_s"]
    )


def test_throughput_benchmark_counts_tokens_per_step(tmp_path):
    rows = bench_models.bench_throughput(
        ["rwkv", "transformer"], [2, 1], str(tmp_path), contexts=(8,), d_model=8, n_layers=1,
        repeats=1,
    )  # fmt: skip
    assert [(r["arch"], r["batch"]) for r in rows] == [
        ("rwkv", 1), ("rwkv", 2), ("transformer", 1), ("transformer", 2)
    ]  # fmt: skip
    for r in rows:
        assert math.isclose(r["tokens_per_s"], r["batch"] / (r["ms_per_step"] / 1e3))
    per_seq = {(r["arch"], r["batch"]): r["state_kib_per_seq"] for r in rows}
    assert per_seq[("rwkv", 1)] == per_seq[("rwkv", 2)] > 0  # per sequence, not per batch
    # an 8-position KV cache (2 x 8 x 8 floats) outweighs RWKV-4's 5 x 8 floats
    assert per_seq[("transformer", 1)] > per_seq[("rwkv", 1)]
    assert os.path.getsize(tmp_path / "throughput_bench.png") > 0


def test_train_benchmark_times_time_chunks_only_where_the_state_is_constant(tmp_path, monkeypatch):
    """``time_chunk``: the recurrent arch is timed in one call and in every chunk length
    below the length, with the policy asked for; the row keeps the fastest (times
    stubbed per step) and says so. The Transformer, whose KV cache grows, is not."""
    compiled = []
    compile_step = bench_models._compile_train_step
    seconds = {(8, 0): 2.0, (8, 4): 1.0, (32, 0): 3.0, (32, 4): 4.0, (32, 8): 1.5}

    def spy(model, batch, length, time_chunk=0, recompute="dots"):
        compiled.append((length, time_chunk, recompute if time_chunk else None))
        step, args, temp = compile_step(model, batch, length, time_chunk, recompute)
        return (length, time_chunk), args, temp  # the key the stubbed timer reads

    monkeypatch.setattr(bench_models, "_compile_train_step", spy)
    monkeypatch.setattr(bench_models, "time_call", lambda key, args, repeats: seconds[key])
    rows = bench_models.bench_train(
        ["rwkv", "transformer"], [8, 32], str(tmp_path), d_model=8, n_layers=1, repeats=1,
        time_chunk=[8, 4], recompute="all",
    )  # fmt: skip
    by = {(r["arch"], r["length"]): r for r in rows}
    assert by[("transformer", 8)]["time_chunk"] == by[("transformer", 32)]["time_chunk"] == 0
    assert by[("transformer", 32)]["seconds"] == 3.0
    assert (by[("rwkv", 8)]["time_chunk"], by[("rwkv", 8)]["seconds"]) == (4, 1.0)
    assert (by[("rwkv", 32)]["time_chunk"], by[("rwkv", 32)]["seconds"]) == (8, 1.5)
    assert by[("rwkv", 8)]["vs_one_call"] == by[("rwkv", 32)]["vs_one_call"] == 0.5
    # rwkv at 8 (and in chunks of 4), at 32 (in chunks of 4 and 8); the transformer at
    # 8 and 32 in one call only
    assert compiled == [
        (8, 0, None), (8, 4, "all"), (32, 0, None), (32, 4, "all"), (32, 8, "all"),
        (8, 0, None), (32, 0, None),
    ]  # fmt: skip
    with open(tmp_path / "train_bench.csv") as f:
        assert {"time_chunk", "vs_one_call"} <= set(next(csv.DictReader(f)))
    with open(tmp_path / "machine.json") as f:
        assert json.load(f)["recompute"] == "all"


def test_a_chunked_step_runs_at_the_asked_batch_where_one_call_does_not_fit(tmp_path):
    """Recomputed chunks keep less for the backward: with a budget between the two
    steps' memory, the row runs in chunks at batch 2 (one call alone would have halved
    the batch), and has no one-call time to compare with."""
    model = bench_models._build("hawk", 256, 16, 2, max_len=64)
    one_call = bench_models._compile_train_step(model, 2, 64)[2]
    chunked = bench_models._compile_train_step(model, 2, 64, 8)[2]
    assert chunked < one_call
    (row,) = bench_models.bench_train(
        ["hawk"], [64], str(tmp_path), batch=2, d_model=16, n_layers=2, repeats=1,
        time_chunk=8, budget=(one_call + chunked) // 2,
    )  # fmt: skip
    assert (row["batch"], row["time_chunk"]) == (2, 8)
    assert math.isfinite(row["seconds"]) and math.isnan(row["vs_one_call"])


def test_recompute_benchmark_compares_every_policy_with_one_call(tmp_path):
    """One row per policy after the one-call row; the chunked steps keep less for the
    backward the more they recompute."""
    from arch.time_chunks import RECOMPUTE

    rows = bench_models.bench_recompute(
        ["hawk"], 256, str(tmp_path), chunk=32, batch=2, d_model=32, n_layers=2, repeats=1
    )
    assert [r["recompute"] for r in rows] == ["one call", *RECOMPUTE]
    assert rows[0]["vs_one_call"] == 1 and all(r["seconds"] > 0 for r in rows)
    temp = {r["recompute"]: r["temp_mib"] for r in rows}
    assert temp["all"] < temp["dots"] < temp["none"]
    with open(tmp_path / "recompute_bench.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
