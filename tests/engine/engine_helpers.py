"""Helpers shared by the engine tests and the scripts they launch (importable without pytest)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.engine.config import ExperimentConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON = Path(sys.executable)
VIDEOS, FRAMES, SEED = 2, 6, 0


def tiny_experiment(data_root: str | Path, output_dir: str | Path) -> ExperimentConfig:
    """The tiny experiment every engine test starts from (3 epochs x 3 steps of batch 4)."""
    cfg = ExperimentConfig()
    cfg.model.preset = "diffpose-tiny"
    cfg.data.root = str(data_root)
    # already built with these settings by the fixture: a no-op
    cfg.data.synthetic = SyntheticConfig(num_videos=VIDEOS, frames_per_video=FRAMES, seed=SEED)
    cfg.optim.lr = 1e-3
    cfg.optim.epochs = 3
    cfg.optim.milestones = (2,)
    cfg.optim.batch_size = 4
    cfg.eval.every = 0
    cfg.eval.num_samples = 1
    cfg.eval.steps = 1
    cfg.eval.sweep_num_samples = (1, 2)
    cfg.eval.sweep_steps = (1, 2)
    cfg.eval.batch_size = 8
    cfg.eval.max_clips = 8
    cfg.runtime.output_dir = str(output_dir)
    cfg.runtime.device = "cpu"
    cfg.runtime.progress = False
    cfg.runtime.log_every = 1
    return cfg


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: one thread each, no inherited test-only switches."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, relative, sorted (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
