"""Shared tiny fixtures of the engine tests: one synthetic dataset and one untrained model per
session, and a factory of tiny experiments (``diffpose-tiny``, batch 4, N and steps <= 2).

Everything is sized so that the whole ``tests/engine`` set runs in about a minute on two CPU
cores: 2 videos x 6 frames per split (12 training clips: 3 steps per epoch at batch 4).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The test modules and the scripts they launch import the helpers as a top-level module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_helpers import FRAMES, SEED, VIDEOS, tiny_experiment

from kpdiff.data.synthetic import SyntheticConfig, build_synthetic_dataset
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import Datasets, prepare_datasets

_THREADS = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """One intra-op thread while an engine test and its fixtures (module-scoped ones included)
    run: the models are tiny, two threads on a busy 2-core machine mostly wait for each other,
    and a fixed thread count keeps float sums, hence the exact-resume comparisons, identical."""
    item.stash[_THREADS] = torch.get_num_threads()
    torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    torch.set_num_threads(item.stash.get(_THREADS, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (train + val, 2 videos x 6 frames each), built once per session."""
    root = tmp_path_factory.mktemp("engine-data") / "synthetic"
    cfg = SyntheticConfig(num_videos=VIDEOS, frames_per_video=FRAMES, seed=SEED)
    return build_synthetic_dataset(root, cfg, splits=("train", "val"))


@pytest.fixture
def make_config(tiny_data: Path, tmp_path: Path) -> Callable[..., ExperimentConfig]:
    """``make_config(name="run")``: a tiny experiment writing into ``tmp_path / name``."""

    def make(name: str = "run") -> ExperimentConfig:
        return tiny_experiment(tiny_data, tmp_path / name)

    return make


@pytest.fixture(scope="session")
def tiny_datasets(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    """The tiny experiment's train / val datasets, read once per session."""
    return prepare_datasets(tiny_experiment(tiny_data, tmp_path_factory.mktemp("unused")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ``diffpose-tiny`` written by ``save_pretrained`` (seeded)."""
    from kpdiff.diffpose import DiffPose

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-model")
    DiffPose.from_preset("diffpose-tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``diffpose-tiny`` with other widths: weights that fit no tiny experiment."""
    from kpdiff.diffpose import DiffPose

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("other-model")
    DiffPose.from_preset("diffpose-tiny", dim=32, decoder_dims=(32, 16, 8)).save_pretrained(folder)
    return folder
