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
    full, control = run.FULL, run.CONTROL
    args = ["--quick", "--out", str(tmp_path), "--only", full, control, "--seeds", "0", "1"]
    assert run.main(args) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["summary"]) == {full, control}
    assert [(r["variant"], r["seed"]) for r in report["runs"]] == [
        (full, 0), (control, 0), (full, 1), (control, 1),
    ]  # fmt: skip
    summary = report["summary"][full]
    assert summary["seeds"] == [0, 1]
    assert set(summary["mean"]) == {f"N={n}, steps={s}" for n in (1, 5, 10) for s in (1, 2, 4)}
    runs = [r for r in report["runs"] if r["variant"] == full]
    values = [r["columns"]["Mean"] for r in runs]
    mean, std = summary["columns"]["Mean"]
    assert mean == pytest.approx(sum(values) / 2)
    assert std == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert summary["gap"][0] == pytest.approx(
        sum(r["train_mean"] - r["columns"]["Mean"] for r in runs) / 2
    )
    assert report["summary"][control]["mean"].keys() == {"N=1, steps=1"}
    table = (tmp_path / "ablations.md").read_text()
    assert f"| {control} |" in table and " ± " in table and "| 10 |" in table
    assert (tmp_path / "variants.png").stat().st_size > 0
    assert (tmp_path / "full_ap_vs_n_steps_seed0.png").stat().st_size > 0


def test_variants_map_to_valid_model_switches():
    from kpdiff import DiffPose

    run = load_script()
    for overrides, paper in run.VARIANTS.values():
        model = DiffPose.from_preset("diffpose-tiny", **overrides)
        assert model.config.delta == overrides["delta"]
        assert paper is None or 0 < paper < 100
