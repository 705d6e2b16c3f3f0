"""Training, evaluation, prediction and the demo: what the ``kpdiff`` command runs."""

from kpdiff.engine.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from kpdiff.engine.evaluate import ClipPoseModel, SweepResult, evaluate_model
from kpdiff.engine.figures import inside_pictures
from kpdiff.engine.predict import VideoPrediction, VideoPredictor, render_video
from kpdiff.engine.train import TrainablePoseModel, TrainResult, train

__all__ = [
    "ClipPoseModel",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "SweepResult",
    "TrainResult",
    "TrainablePoseModel",
    "VideoPrediction",
    "VideoPredictor",
    "apply_overrides",
    "config_from_dict",
    "evaluate_model",
    "inside_pictures",
    "load_config",
    "render_video",
    "save_config",
    "train",
]
