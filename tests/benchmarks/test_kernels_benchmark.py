"""benchmarks/kernels: the timing script's no-GPU path, and the compile check for sm_90."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels"
KERNELS = {"_lookup_fwd_kernel", "_lookup_bwd_kernel", "_ddim_kernel", "_decode_kernel"}
KERNELS |= {"_render_kernel"}


@pytest.fixture
def scripts(monkeypatch):
    """Import the folder's scripts as the command line does (their folder first on sys.path)."""
    monkeypatch.syspath_prepend(str(FOLDER))
    for name in ("run", "compile_check", "kernel_cases"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module


def test_timing_without_gpu_says_so_and_exits_0(scripts, monkeypatch, capsys):
    run = scripts("run")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "needs a CUDA GPU" in out and "compile_check.py" in out


def test_eager_traffic_counts_each_op_once_and_views_never(scripts):
    check = scripts("compile_check")
    a, b = (torch.empty(1000, device="meta") for _ in "ab")
    # mul: reads a, b, writes 1 → 3 × 4000 B; add: reads the product and a, writes → 3 × 4000
    assert check.eager_traffic(lambda a, b: a * b + a, (a, b)) == (24000, 2)
    # a view and a broadcast operand (stride 0: its 10 distinct elements are read once)
    row = torch.empty(10, device="meta")
    grid = torch.empty(100, 10, device="meta")
    assert check.eager_traffic(
        lambda g, r: g.view(10, 100).t() * 0 + r.expand(100, 10), (grid, row)
    ) == (
        4 * (1000 + 1000) + 4 * (1000 + 10 + 1000),
        2,
    )


def test_occupancy_follows_the_register_limit(scripts):
    check = scripts("compile_check")
    assert check._occupancy(90, num_warps=4, registers=32, shared=0) == 1.0
    # 128 registers × 32 threads = 4096 per warp → 16 warps per SM → 4 blocks of 4 warps
    assert check._occupancy(90, num_warps=4, registers=128, shared=0) == 16 / 64


@pytest.mark.slow
def test_every_kernel_compiles_for_h100_vectorised_without_spills(tmp_path):
    """Compiled (not run) for sm_90 at DiffPose's shapes, with triton's real specialisation."""
    pytest.importorskip("triton")
    out = tmp_path / "compile.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, str(FOLDER / "compile_check.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = json.loads(out.read_text())["reports"]
    launches = [x for r in reports for x in r["launches"]]
    assert {x["name"] for x in launches} == KERNELS
    assert all(r["error"] is None and r["launches"] for r in reports)
    assert all(x["spill_bytes"] == 0 for x in launches), launches
    for x in launches:  # 128-bit accesses on every dense stream
        if x["name"] != "_render_kernel":  # reads 2 floats per joint: nothing to vectorise
            assert x["load_bits"] == 128, x
        if x["name"] != "_decode_kernel":  # writes 3 floats per joint
            assert x["store_bits"] == 128, x
    # the fused kernels move less than torch eager; the lookup's margin is below 2×, and the
    # mask alone moves what eager moves (amax reads x̄, the product reads 𝔽 and writes A ⊙ 𝔽)
    ratios = {r["kernel"]: r["traffic_ratio"] for r in reports}
    assert all(ratio > 1.4 for k, ratio in ratios.items() if k != "lookup mask fwd"), ratios
    assert math.isclose(ratios["lookup fwd"], 7 / 4, rel_tol=0.02), ratios
    assert math.isclose(ratios["lookup mask fwd"], 1.0, rel_tol=0.02), ratios


def test_timing_report_and_json_with_a_failed_variant(scripts, monkeypatch, tmp_path, capsys):
    """The GPU path's report, with the timing itself faked: a NaN (failed) variant prints and
    is written as null (JSON has no NaN)."""
    run = scripts("run")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(run, "peak_gbps", lambda *a: (1000.0, "test"))

    def fake(case):
        return run.Row(case.kernel, case.shape, case.dtype, 2.0, float("nan"), 1.0, 0.5)

    monkeypatch.setattr(run, "time_case", fake)
    out = tmp_path / "kernels.json"
    assert run.main(["--quick", "--no-predict", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "# Fake GPU, peak 1000 GB/s" in table
    assert "| 2.000 | nan | 1.000 | 2.00 | nan | 500 | 50 |" in table  # 0.5 GB in 1 ms
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 13 and all(r["compile_ms"] is None for r in rows)
