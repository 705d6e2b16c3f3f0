"""kpdiff: diffusion models over keypoint heatmaps.

The public API, and nothing else. See the docs for the data flow from clip to keypoints.
"""

from kpdiff.codecs import GaussianHeatmapCodec, SignalRange, flip_heatmaps, flip_keypoints
from kpdiff.diffusion import Denoiser, HeatmapDiffusion, default_scheduler
from kpdiff.errors import KpdiffError, KpdiffInputError
from kpdiff.sampling import EnsembleResult, EnsembleSampler, repeat_cond

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "EnsembleResult",
    "EnsembleSampler",
    "GaussianHeatmapCodec",
    "HeatmapDiffusion",
    "KpdiffError",
    "KpdiffInputError",
    "SignalRange",
    "__version__",
    "default_scheduler",
    "flip_heatmaps",
    "flip_keypoints",
    "repeat_cond",
]
