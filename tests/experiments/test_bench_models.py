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
