"""Smoke tests of the tutorial examples: each ``main(["--quick", "--out", tmp])`` runs end to end
and writes its outputs under ``--out``; the single-image example also predicts on a given image
from a saved checkpoint, and the uncertainty statistics are checked on known data."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """The examples set torch's thread count (``--threads``); leave it as it was."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"kpdiff_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_custom_denoiser_quick(tmp_path: Path) -> None:
    assert load("custom_denoiser").main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"N1_steps1", "N10_steps4"}
    for key in ("N1_steps1", "N10_steps4"):
        assert set(results[key]["columns"]) == {"Head", "Body", "Front", "Hind", "Mean"}
        assert math.isfinite(results[key]["error_px_mean"])
    assert results["N1_steps1"]["mean_spread_px"] == 0  # one hypothesis: no spread
    assert (tmp_path / "model.pt").is_file()


def test_custom_denoiser_trains_with_the_engine(tmp_path: Path) -> None:
    """What the tutorial says: QuadrupedPose goes through ``train(config, model=…)`` as is."""
    from kpdiff.data import (
        QUADRUPED,
        ClipConfig,
        SyntheticConfig,
        TopDownClipDataset,
        build_synthetic_dataset,
        read_posetrack,
    )
    from kpdiff.engine import ExperimentConfig, train
    from kpdiff.engine.data import Datasets

    example = load("custom_denoiser")
    root = build_synthetic_dataset(
        tmp_path / "data", SyntheticConfig(num_videos=2, frames_per_video=4, schema=QUADRUPED)
    )
    kw = {
        "schema": QUADRUPED,
        "config": ClipConfig(delta=0, input_size=example.INPUT_SIZE),
        "codec": example.GaussianHeatmapCodec((24, 32), sigma=1.5),
    }
    train_videos = read_posetrack(root, split="train", schema=QUADRUPED)
    val_videos = read_posetrack(root, split="val", schema=QUADRUPED)
    datasets = Datasets(
        train=TopDownClipDataset.from_videos(train_videos, root, **kw),
        val=TopDownClipDataset.from_videos(val_videos, root, **kw),
        val_videos=val_videos,
        schema=QUADRUPED,
    )
    config = ExperimentConfig()
    config.runtime.output_dir = str(tmp_path / "run")
    config.runtime.device, config.runtime.progress = "cpu", False
    config.optim.batch_size, config.optim.max_steps = 2, 2
    config.eval.num_samples, config.eval.steps = 2, 2
    torch.manual_seed(0)
    result = train(config, model=example.QuadrupedPose(QUADRUPED.num_keypoints), datasets=datasets)
    assert result.steps == 2 and result.best_ap is not None
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_single_image_quick_then_own_image(tmp_path: Path) -> None:
    example = load("single_image")
    assert example.main(["--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"N1_steps1", "N10_steps4"}
    drawn = sorted((tmp_path / "images").glob("*.jpg"))
    assert drawn, "no image with skeletons was written"

    # the documented path for a user's own image: a checkpoint, an image and a box
    image = next((tmp_path / "data" / "images" / "val").rglob("000000.jpg"))
    out = tmp_path / "own"
    argv = ["--checkpoint", str(tmp_path / "run" / "best"), "--image", str(image)]
    assert example.main([*argv, "--box", "100", "40", "80", "160", "--out", str(out)]) == 0
    assert (out / "images" / f"{image.parent.name}_{image.name}").is_file()


def test_uncertainty_quick(tmp_path: Path) -> None:
    assert load("uncertainty").main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "error_vs_spread.png").stat().st_size > 0
    stats = json.loads((tmp_path / "uncertainty.json").read_text())
    assert len(stats["bin_mean_error"]) == 10
    assert stats["joints"] > 0 and 0 <= stats["failure_share_top_bin"] <= 1
    assert stats["failure"] == "wrong at PCKh@0.5" and 0 <= stats["failure_rate"] <= 1


def test_spread_statistics_on_known_data() -> None:
    stats_of = load("uncertainty").spread_statistics
    spread = np.arange(100, dtype=float)
    error = 2 * spread  # error grows with spread: ρ = 1, failures only in the top decile
    stats = stats_of(spread, error, threshold=179.0)
    assert stats["spearman_rho"] == pytest.approx(1.0)
    assert stats["bin_mean_spread"] == pytest.approx([4.5 + 10 * i for i in range(10)])
    assert stats["failure_share_top_bin"] == pytest.approx(1.0)  # errors 180 … 198
    assert stats["failure_share_rest"] == 0.0
    assert stats["failures_caught_by_top_bin"] == 1.0
    assert stats["auroc"] == 1.0  # every failure has a higher spread than every success
    # a per-joint radius; spread unrelated to failure gives AUROC 1/2
    radius = np.where(np.arange(100) % 2 == 0, 1e9, 0.0)  # odd joints fail (error > 0) or 0
    stats = stats_of(spread, error + 1, threshold=radius)
    assert stats["failure_rate"] == 0.5
    assert stats["auroc"] == pytest.approx(0.5, abs=0.02)
    assert stats_of(-spread, error, threshold=179.0)["auroc"] == 0.0
