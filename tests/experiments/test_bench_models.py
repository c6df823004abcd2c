"""The model benchmarks run end to end at tiny size and write their CSV and PNG."""

import csv
import math
import os

from experiments import bench_models


def test_train_and_generate_benchmarks_write_tables(tmp_path):
    rows = bench_models.bench_train(
        ["s4d", "transformer"], [8, 16], str(tmp_path), d_model=8, n_layers=1, repeats=1
    )
    assert {r["arch"] for r in rows} == {"s4d", "transformer"}
    assert all(r["seconds"] > 0 for r in rows)
    assert [r["growth"] for r in rows if r["length"] == 8] == [1.0, 1.0]
    rows = bench_models.bench_generate(
        ["s4d", "transformer"], [8, 32], str(tmp_path), d_model=8, n_layers=1, repeats=2
    )
    state = {(r["arch"], r["context"]): r["state_kib"] for r in rows}
    assert state[("s4d", 8)] == state[("s4d", 32)]  # recurrent state: constant size
    assert state[("transformer", 32)] > state[("transformer", 8)]  # KV cache grows
    for r in rows:  # cumulative time: the per-token time summed over the context
        assert r["cumulative_s"] >= r["ms_per_token"] / 1e3 * min(8, r["context"]) * 0.99
    stems = ("train_bench", "train_memory", "generate_bench", "generate_cumulative")
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
