"""kpdiff: diffusion models over keypoint heatmaps.

The public API, and nothing else. See the docs for the data flow from clip to keypoints.
"""

from kpdiff.codecs import GaussianHeatmapCodec, SignalRange, flip_heatmaps, flip_keypoints
from kpdiff.decoder import PoseDecoder, StepRescale, timestep_embedding
from kpdiff.diffpose import PRESETS, DiffPose, DiffPoseConfig
from kpdiff.diffusion import Denoiser, HeatmapDiffusion, default_scheduler
from kpdiff.drawing import draw_poses
from kpdiff.encoder import (
    Backbone,
    SpatioTemporalEncoder,
    build_backbone,
    load_backbone_state_dict,
    load_backbone_weights,
)
from kpdiff.errors import KpdiffError, KpdiffInputError
from kpdiff.lookup import (
    ConvMixer,
    FeaturePyramid,
    HeatmapEmbed,
    LookupInteraction,
    ScaleFusion,
    TokenMixer,
)
from kpdiff.regressor import HeatmapRegressor
from kpdiff.sampling import EnsembleResult, EnsembleSampler, repeat_cond

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Backbone",
    "ConvMixer",
    "Denoiser",
    "DiffPose",
    "DiffPoseConfig",
    "EnsembleResult",
    "EnsembleSampler",
    "FeaturePyramid",
    "GaussianHeatmapCodec",
    "HeatmapDiffusion",
    "HeatmapEmbed",
    "HeatmapRegressor",
    "KpdiffError",
    "KpdiffInputError",
    "LookupInteraction",
    "PoseDecoder",
    "ScaleFusion",
    "SignalRange",
    "SpatioTemporalEncoder",
    "StepRescale",
    "TokenMixer",
    "__version__",
    "build_backbone",
    "default_scheduler",
    "draw_poses",
    "flip_heatmaps",
    "flip_keypoints",
    "load_backbone_state_dict",
    "load_backbone_weights",
    "repeat_cond",
    "timestep_embedding",
]
