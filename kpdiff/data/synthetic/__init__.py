"""A built-in synthetic video dataset in the PoseTrack18 layout (tests, tutorials, smoke runs).

Procedurally animated articulated figures (any :class:`~kpdiff.data.schemas.KeypointSchema` with
a :class:`FigureRig`: a 3-D rest pose, a kinematic tree, drawn parts and motion cycles) walk,
wave and exercise over cluttered textured backgrounds under a moving camera. Moving occluders pass
over them and some frames are motion-blurred while their neighbours are sharp, so a single frame
is sometimes not enough and temporal context pays. The dataset is written as::

    <root>/images/<split>/<video>/000000.jpg …       frames
    <root>/annotations/<split>/<video>.json            PoseTrack18 ground truth, one file a video
    <root>/detections/<split>_boxes.json               detector boxes, DCPose format
    <root>/synthetic.json                              the build's config and hash

Everything is deterministic from ``SyntheticConfig.seed`` (same JSON bytes, same JPEG bytes).
Figure units: the rest pose is about 1 tall (humans) or 1 long (quadrupeds); ``x`` is the figure's
left, ``y`` points down, ``z`` away from the camera; a figure faces ``rig.forward``.

The package's modules, each re-exported here: ``rigs`` (:class:`FigureRig` and its parts,
:data:`HUMAN_RIG`, :data:`QUADRUPED_RIG`, :func:`register_rig`, :func:`get_rig`), ``config``
(:class:`SyntheticConfig` and its hash), ``kinematics`` (a rig resolved against its schema),
``scene`` (figures, textures, backgrounds, occluders, camera), ``render`` (rasterising frames and
videos), ``annotate`` (ground truth and fake detections) and ``build``
(:func:`build_synthetic_dataset` and its worker processes). The :data:`QUADRUPED` schema lives
in :mod:`kpdiff.data.schemas` beside the other built-in schemas.
"""

from kpdiff.data.schemas import QUADRUPED
from kpdiff.data.synthetic.build import MANIFEST as MANIFEST
from kpdiff.data.synthetic.build import PARALLEL_MIN_FRAMES as PARALLEL_MIN_FRAMES
from kpdiff.data.synthetic.build import build_synthetic_dataset
from kpdiff.data.synthetic.config import GENERATOR_VERSION as GENERATOR_VERSION
from kpdiff.data.synthetic.config import HEAD_SCALE_POSETRACK18 as HEAD_SCALE_POSETRACK18
from kpdiff.data.synthetic.config import SyntheticConfig
from kpdiff.data.synthetic.rigs import (
    HUMAN_RIG,
    QUADRUPED_RIG,
    FigureRig,
    Motion,
    Part,
    Swing,
    get_rig,
    register_rig,
)

__all__ = [
    "HUMAN_RIG",
    "QUADRUPED",
    "QUADRUPED_RIG",
    "FigureRig",
    "Motion",
    "Part",
    "Swing",
    "SyntheticConfig",
    "build_synthetic_dataset",
    "get_rig",
    "register_rig",
]
