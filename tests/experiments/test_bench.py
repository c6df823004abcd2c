"""A tiny kernel benchmark run writes its CSV and PNG and a row per measurement."""

from __future__ import annotations

import csv
import math

import jax.numpy as jnp
import pytest

from experiments import bench, hardware
from experiments.bench import bench_attention, bench_kernels, kernel_impls, least_bytes


def test_tiny_bench_writes_csv_and_png(tmp_path, capsys):
    kernels = ("linear_scan", "selective_scan")
    rows = bench_kernels(
        [4, 8], None, str(tmp_path), kernels=kernels, batch=1, channels=4, d_state=2, repeats=1
    )
    expected = sum(2 * len(kernel_impls(k)) for k in kernels)
    assert len(rows) == expected
    assert all(r["seconds"] > 0 for r in rows), [r.get("error") for r in rows]
    for r in rows:
        if r["impl"] == "sequential":
            assert math.isclose(r["vs_sequential"], 1.0)
    with open(tmp_path / "kernels_bench.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == expected and {"chunked", "pallas"} <= {r["impl"] for r in table}
    assert (tmp_path / "kernels_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "selective_scan" in capsys.readouterr().out


def test_matrix_state_kernels_are_benchmarked(tmp_path):
    rows = bench_kernels(
        [8],
        None,
        str(tmp_path),
        kernels=("wkv6", "ssd"),
        batch=1,
        channels=4,
        d_state=2,
        passes=("forward", "backward"),
        repeats=1,
    )
    assert {(r["kernel"], r["impl"], r["pass"]) for r in rows} == {
        (k, i, p)
        for k in ("wkv6", "ssd")
        for i in ("sequential", "chunked")
        for p in ("forward", "backward")
    }
    assert all(r["seconds"] > 0 for r in rows), [r.get("error") for r in rows]


def test_bench_rejects_unknown_impl(tmp_path):
    with pytest.raises(ValueError, match="unknown impl"):
        bench_kernels([4], ["nope"], str(tmp_path), kernels=["wkv4"], repeats=1)


def test_bandwidth_fraction_counts_the_bytes_a_kernel_must_move(tmp_path):
    rows = bench_kernels(
        [8], ["sequential"], str(tmp_path), kernels=("linear_scan",), batch=1, channels=4,
        repeats=1, passes=("forward", "backward"),
    )  # fmt: skip
    assert all(0 < r["bandwidth_frac"] for r in rows)
    a = b = jnp.ones((1, 8, 4), jnp.float32)
    fn = kernel_impls("linear_scan")["sequential"]
    # inputs a, b read; outputs (y and the final state) written
    assert least_bytes(fn, (a, b), "forward") == 4 * (2 * 32 + 32 + 4)
    assert least_bytes(fn, (a, b), "backward") == 4 * 2 * 2 * 32  # read, gradient written


def test_machine_rates_divide_the_work_by_the_time(monkeypatch):
    monkeypatch.setattr(hardware, "time_call", lambda fn, args, repeats: 0.5)
    assert hardware.matmul_rate(n=64) == 2 * 64**3 / 0.5
    assert hardware.memory_bandwidth(mib=1) == 2**20 / 0.5


def test_attention_bench_compares_blockwise_with_xla(tmp_path):
    rows = bench_attention([16, 32], str(tmp_path), batch=1, heads=1, head_dim=8, repeats=1)
    assert {(r["impl"], r["length"], r["pass"]) for r in rows} == {
        (i, n, p) for i in ("xla", "blockwise") for n in (16, 32) for p in ("forward", "backward")
    }
    for r in rows:
        assert r["seconds"] > 0 and r["mfu"] > 0
        if r["impl"] == "xla":
            assert r["vs_xla"] == 1.0
    forward = {r["length"]: r["gflop_s"] * r["seconds"] for r in rows if r["pass"] == "forward"}
    assert forward[32] == pytest.approx(4 * 8 * 32 * 33 / 2 / 1e9)  # causal pairs x 4 x dh
    assert (tmp_path / "attention_bench.csv").exists()
    assert bench.ATTENTION_COLUMNS[0] == "impl"
