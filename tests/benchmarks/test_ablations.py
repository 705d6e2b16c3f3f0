"""The ablation benchmark runs end to end in its quick mode and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablations" / "run.py"


def load_script():
    spec = importlib.util.spec_from_file_location("ablations_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_table_plots_and_json(tmp_path):
    run = load_script()
    full, direct = run.FULL, "Direct-single (no lookup, δ=0)"
    assert run.main(["--quick", "--out", str(tmp_path), "--only", full, direct]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["results"]) == {full, direct}
    assert report["results"][direct]["overrides"] == {"lookup": "none", "delta": 0}
    grid = report["results"][full]["grid"]
    assert set(grid) == {f"{n},{s}" for n in (1, 5, 10) for s in (1, 2, 4)}
    table = (tmp_path / "ablations.md").read_text()
    assert "| Direct-single (no lookup, δ=0) |" in table and "52.5" in table
    assert (tmp_path / "variants.png").stat().st_size > 0
    assert (tmp_path / "full_ap_vs_n_steps.png").stat().st_size > 0


def test_variants_map_to_valid_model_switches():
    from kpdiff import DiffPose

    run = load_script()
    for overrides, paper in run.VARIANTS.values():
        model = DiffPose.from_preset("diffpose-tiny", **overrides)
        assert model.config.delta == overrides["delta"]
        assert 0 < paper < 100
