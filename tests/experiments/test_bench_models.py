"""The model benchmarks run end to end at tiny size and write their CSV and PNG."""

import csv
import os

import pytest

from experiments import bench_models


@pytest.mark.slow  # compiles a train step per (arch, length) twice: minutes on 2 cores
def test_train_and_generate_benchmarks_write_tables(tmp_path):
    rows = bench_models.bench_train(
        ["s4d", "transformer"], [16, 32], str(tmp_path), d_model=16, n_layers=1, repeats=1
    )
    assert {r["arch"] for r in rows} == {"s4d", "transformer"}
    assert all(r["seconds"] > 0 for r in rows)
    assert [r["growth"] for r in rows if r["length"] == 16] == [1.0, 1.0]
    rows = bench_models.bench_generate(
        ["s4d", "transformer"], [8, 32], str(tmp_path), d_model=16, n_layers=1, repeats=2
    )
    state = {(r["arch"], r["context"]): r["state_kib"] for r in rows}
    assert state[("s4d", 8)] == state[("s4d", 32)]  # recurrent state: constant size
    assert state[("transformer", 32)] > state[("transformer", 8)]  # KV cache grows
    for stem in ("train_bench", "generate_bench"):
        assert os.path.getsize(tmp_path / f"{stem}.png") > 0
        with open(tmp_path / f"{stem}.csv") as f:
            assert len(list(csv.DictReader(f))) == 4
