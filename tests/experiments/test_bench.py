"""A tiny kernel benchmark run writes its CSV and PNG and a row per measurement."""

from __future__ import annotations

import csv
import math

import pytest

from experiments.bench import bench_kernels, kernel_impls


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
