"""Smoke runs of the data-scale statistics and the demo's core-split benchmark."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from kpdiff.data.synthetic import SyntheticConfig, build_synthetic_dataset

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_stats_measures_the_head_box_calibration(tmp_path):
    stats = load("data_stats")
    figures = {}
    for scale in (1.0, 1.34):
        root = build_synthetic_dataset(
            tmp_path / f"s{scale}", SyntheticConfig(num_videos=2, frames_per_video=8,
                                                    head_scale=scale), splits=("val",),
        )  # fmt: skip
        figures[scale] = stats.scale_statistics(root, "val")
    for name in ("head_over_torso", "head_over_height"):
        assert figures[1.0][name]["n"] > 5
        ratio = figures[1.34][name]["median"] / figures[1.0][name]["median"]
        assert ratio == pytest.approx(1.34, rel=0.02)
    assert stats.main([str(root), "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["head_over_torso"]["n"] > 5


@pytest.mark.slow
def test_demo_speed_quick(tmp_path, capsys):
    speed = load("demo_speed")
    data = tmp_path / "data"
    args = ["--quick", "--data", str(data), "--pairs", "1,0", "1,1", "--steps", "6",
            "--warmup", "1", "--json", str(tmp_path / "speed.json")]  # fmt: skip
    assert speed.main(args) == 0
    rates = json.loads((tmp_path / "speed.json").read_text())["rates"]
    assert set(rates) == {"1,0", "1,1"} and all(v[0] > 0 for v in rates.values())
    assert "| 1 | 1 |" in capsys.readouterr().out
