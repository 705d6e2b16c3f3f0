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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from kpdiff.data.posetrack import write_posetrack18
from kpdiff.data.schemas import KeypointSchema, get_schema, register_schema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic
from kpdiff.progress import progress

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

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output changes; part of the build hash. Version 2 (2026-12):
head boxes scaled by ``SyntheticConfig.head_scale`` (calibrated on real PoseTrack18); frames are
the same as version 1's."""

HEAD_SCALE_POSETRACK18 = 1.34
"""Head-box scale that matches real PoseTrack18: head size (0.6 × the head box diagonal) over the
torso length (mid-shoulder to mid-hip) has median 0.483 on the 13 persons of the real PoseTrack18
sample and 0.360 on unscaled synthetic head boxes (``benchmarks/data_stats.py``); 0.483 / 0.360
≈ 1.34. The head size over the person's height agrees (0.161 real, 0.119 unscaled)."""


# ----------------------------------------------------------------------------- figure description
@dataclass(frozen=True)
class Part:
    """One drawn piece of a figure.

    Args:
        joints: two joint names (``"capsule"``, ``"ellipse"``) or three or more (``"polygon"``).
            A capsule from a joint to itself is a disc.
        width: capsule thickness / polygon outline, in figure units; for an ellipse the ratio of
            its minor to its major axis. Default ``0.06``.
        material: index of the texture it is filled with (see ``FigureRig.materials``).
        shape: ``"capsule"``, ``"ellipse"`` or ``"polygon"``. Default ``"capsule"``.
        depth_bias: added to the part's mean depth when ordering parts (positive: further).
    """

    joints: tuple[str, ...]
    width: float = 0.06
    material: int = 0
    shape: Literal["capsule", "ellipse", "polygon"] = "capsule"
    depth_bias: float = 0.0


@dataclass(frozen=True)
class Swing:
    """A joint's local rotation over one motion cycle: ``offset + amplitude · sin(2π(φ + phase))``.

    The rotation (degrees, about the figure axis ``axis`` in the parent's frame) turns the bone
    from the joint's parent to the joint, and with it the joint's whole subtree.
    """

    joint: str
    axis: Literal["x", "y", "z"]
    offset: float = 0.0
    amplitude: float = 0.0
    phase: float = 0.0


@dataclass(frozen=True)
class Motion:
    """A motion cycle (walk, wave, …).

    Args:
        swings: the joint rotations.
        frequency: range of cycles per frame, drawn per figure. Default ``(1/24, 1/12)``.
        speed: travel along the facing direction, in figure units per cycle. Default ``0``.
        weight: relative probability of a figure doing this motion. Default ``1``.
    """

    swings: tuple[Swing, ...]
    frequency: tuple[float, float] = (1 / 24, 1 / 12)
    speed: float = 0.0
    weight: float = 1.0


@dataclass(frozen=True)
class FigureRig:
    """How to build, draw and animate a figure of a schema.

    Args:
        rest: joint name → rest position ``(x, y, z)`` in figure units (every schema joint).
        root: the kinematic tree's root joint.
        parts: the drawn pieces; empty → one capsule per ``schema.skeleton`` edge.
        motions: name → :class:`Motion`; empty → the figure only wiggles.
        parents: joint → parent joint; empty → a breadth-first tree of the schema's skeleton.
        head: two joints spanning the head (the head box is their ellipse's box), or ``None``.
        head_ratio: the head ellipse's width over its length. Default ``0.8``.
        materials: number of textures per figure (``max(part.material) + 1`` when ``0``).
        palettes: material → RGB colours to pick from (others get random colours).
        shades: material → ``(source material, brightness)``: a darker copy of another texture.
        forward: the facing direction at rest, in figure axes. Default ``(0, 0, -1)``.
        yaw_range: rotation about the vertical axis in degrees. Default ``(-75, 75)``.
        turn_prob: probability of an extra 180° turn. Default ``0``.
    """

    rest: Mapping[str, tuple[float, float, float]]
    root: str
    parts: tuple[Part, ...] = ()
    motions: Mapping[str, Motion] = field(default_factory=dict)
    parents: Mapping[str, str] = field(default_factory=dict)
    head: tuple[str, str] | None = None
    head_ratio: float = 0.8
    materials: int = 0
    palettes: Mapping[int, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    shades: Mapping[int, tuple[int, float]] = field(default_factory=dict)
    forward: tuple[float, float, float] = (0.0, 0.0, -1.0)
    yaw_range: tuple[float, float] = (-75.0, 75.0)
    turn_prob: float = 0.0


def _human_rig() -> FigureRig:
    """Person facing the camera, for ``POSETRACK`` (height 1 from head top to ankle)."""
    rest: dict[str, tuple[float, float, float]] = {
        "head_top": (0, 0, 0), "nose": (0, 0.085, -0.07), "head_bottom": (0, 0.15, 0),
        "left_ear": (0.06, 0.08, 0), "right_ear": (-0.06, 0.08, 0),
    }  # fmt: skip
    for side, s in (("left", 1), ("right", -1)):
        rest |= {
            f"{side}_shoulder": (0.12 * s, 0.2, 0), f"{side}_elbow": (0.14 * s, 0.37, 0),
            f"{side}_wrist": (0.15 * s, 0.53, 0), f"{side}_hip": (0.08 * s, 0.52, 0),
            f"{side}_knee": (0.085 * s, 0.75, 0), f"{side}_ankle": (0.09 * s, 0.97, 0),
        }  # fmt: skip
    parents = {"nose": "head_bottom", "head_top": "head_bottom"}
    for side in ("left", "right"):
        parents |= {
            f"{side}_ear": "head_bottom", f"{side}_shoulder": "head_bottom",
            f"{side}_elbow": f"{side}_shoulder", f"{side}_wrist": f"{side}_elbow",
            f"{side}_hip": "head_bottom", f"{side}_knee": f"{side}_hip",
            f"{side}_ankle": f"{side}_knee",
        }  # fmt: skip
    # materials: 0 skin, 1 top, 2 sleeve, 3 left leg, 4 right leg, 5 shoes, 6 nose
    parts = [Part(("head_bottom", "head_bottom"), 0.07, 0)]
    for side, leg in (("left", 3), ("right", 4)):
        parts += [
            Part((f"{side}_hip", f"{side}_knee"), 0.075, leg),
            Part((f"{side}_knee", f"{side}_ankle"), 0.06, leg),
            Part((f"{side}_ankle", f"{side}_ankle"), 0.06, 5),
        ]
    parts += [
        Part(
            ("left_shoulder", "right_shoulder", "right_hip", "left_hip"), 0.08, 1, "polygon", 0.02
        ),
        Part(("left_hip", "right_hip"), 0.09, 3, depth_bias=0.015),
    ]
    for side in ("left", "right"):
        parts += [
            Part(("head_bottom", f"{side}_shoulder"), 0.05, 1, depth_bias=0.01),
            Part((f"{side}_shoulder", f"{side}_elbow"), 0.06, 2),
            Part((f"{side}_elbow", f"{side}_wrist"), 0.048, 0),
            Part((f"{side}_wrist", f"{side}_wrist"), 0.055, 0),
            Part((f"{side}_ear", f"{side}_ear"), 0.035, 0, depth_bias=0.01),
        ]
    parts += [Part(("head_top", "head_bottom"), 0.8, 0, "ellipse"), Part(("nose", "nose"), 0.03, 6)]

    def arms(l_off: float, l_amp: float, r_off: float, r_amp: float, ph: float = 0.5) -> tuple:
        return (
            Swing("left_elbow", "z", -l_off, l_amp, ph),
            Swing("right_elbow", "z", r_off, r_amp, ph),
        )

    walk = (
        Swing("left_knee", "x", 0, 28, 0.0), Swing("right_knee", "x", 0, 28, 0.5),
        Swing("left_ankle", "x", 25, 22, 0.75), Swing("right_ankle", "x", 25, 22, 0.25),
        Swing("left_elbow", "x", 0, 24, 0.5), Swing("right_elbow", "x", 0, 24, 0.0),
        Swing("left_wrist", "x", -20, 12, 0.5), Swing("right_wrist", "x", -20, 12, 0.0),
        *arms(8, 0, 8, 0),
    )  # fmt: skip
    wave = (
        *arms(8, 4, 110, 12, 0.0), Swing("right_wrist", "z", 25, 35, 0.25),
        Swing("left_knee", "x", 0, 3), Swing("head_bottom", "z", 0, 3, 0.1),
    )  # fmt: skip
    jacks = (
        *arms(80, 75, 80, 75, 0.0),
        Swing("left_wrist", "z", -10, 10), Swing("right_wrist", "z", 10, 10),
        Swing("left_knee", "z", -9, 9), Swing("right_knee", "z", 9, 9),
    )  # fmt: skip
    idle = (
        *arms(12, 6, 12, 6), Swing("left_wrist", "x", -25, 15), Swing("right_wrist", "x", -25, 15),
        Swing("head_bottom", "z", 0, 4), Swing("left_knee", "x", 5, 5, 0.3),
    )  # fmt: skip
    return FigureRig(
        rest=rest,
        root="head_bottom",
        parts=tuple(parts),
        motions={
            "walk": Motion(walk, (1 / 32, 1 / 18), speed=0.8, weight=2.0),
            "wave": Motion(wave, (1 / 16, 1 / 8)),
            "jacks": Motion(jacks, (1 / 20, 1 / 10)),
            "idle": Motion(idle, (1 / 40, 1 / 20)),
        },
        parents=parents,
        head=("head_top", "head_bottom"),
        palettes={
            0: ((224, 172, 140), (198, 134, 100), (141, 85, 60), (255, 205, 170), (90, 56, 37)),
            5: ((30, 30, 30), (80, 50, 30), (230, 230, 230), (40, 40, 90)),
        },
        shades={2: (1, 0.8), 4: (3, 0.85), 6: (0, 0.55)},
    )


HUMAN_RIG = _human_rig()
"""The built-in rig of the ``posetrack`` schema: a person facing the camera at yaw 0."""

QUADRUPED = register_schema(KeypointSchema(
    name="quadruped",
    keypoints=(
        "nose", "forehead", "withers", "tail_base", "tail_tip",
        "front_left_knee", "front_right_knee", "front_left_paw", "front_right_paw",
        "hind_left_knee", "hind_right_knee", "hind_left_paw", "hind_right_paw",
    ),
    flip_pairs=((5, 6), (7, 8), (9, 10), (11, 12)),
    skeleton=(
        (0, 1), (1, 2), (2, 3), (3, 4), (2, 5), (5, 7), (2, 6), (6, 8),
        (3, 9), (9, 11), (3, 10), (10, 12),
    ),
    eval_groups={"Head": (0, 1), "Body": (2, 3, 4), "Front": (5, 6, 7, 8), "Hind": (9, 10, 11, 12)},
))  # fmt: skip
"""An example non-human schema: 13 points of a four-legged animal (see :data:`QUADRUPED_RIG`)."""


def _quadruped_rig() -> FigureRig:
    """Side-view four-legged animal facing ``+x`` (length 1, nose to tail tip)."""
    rest: dict[str, tuple[float, float, float]] = {
        "nose": (0.55, -0.05, 0), "forehead": (0.42, -0.2, 0), "withers": (0.25, 0, 0),
        "tail_base": (-0.3, 0, 0), "tail_tip": (-0.48, -0.16, 0),
    }  # fmt: skip
    parts = [
        Part(("withers", "tail_base"), 0.22, 0),
        Part(("withers", "forehead"), 0.12, 0),
        Part(("forehead", "nose"), 0.7, 0, "ellipse"),
        Part(("tail_base", "tail_tip"), 0.045, 0),
        Part(("nose", "nose"), 0.04, 2),
    ]
    walk = []
    for side, z, mat, ph in (("left", 0.07, 1, 0.0), ("right", -0.07, 0, 0.5)):
        for end, x, anchor in (("front", 0.25, "withers"), ("hind", -0.28, "tail_base")):
            rest[f"{end}_{side}_knee"] = (x, 0.24, z)
            rest[f"{end}_{side}_paw"] = (x + 0.02, 0.46, z)
            parts += [
                Part((anchor, f"{end}_{side}_knee"), 0.075, mat),
                Part((f"{end}_{side}_knee", f"{end}_{side}_paw"), 0.055, mat),
            ]
            phase = ph if end == "front" else ph + 0.5
            walk += [
                Swing(f"{end}_{side}_knee", "z", 0, 22, phase),
                Swing(f"{end}_{side}_paw", "z", -15, 15, phase + 0.25),
            ]
    walk += [Swing("tail_tip", "z", 0, 10), Swing("forehead", "z", 0, 4, 0.25)]
    idle = (Swing("tail_tip", "z", 5, 25), Swing("forehead", "z", 0, 8, 0.3))
    return FigureRig(
        rest=rest,
        root="withers",
        parts=tuple(parts),
        motions={
            "walk": Motion(tuple(walk), (1 / 28, 1 / 14), speed=0.7, weight=2.0),
            "idle": Motion(idle, (1 / 30, 1 / 15)),
        },
        head=("forehead", "nose"),
        head_ratio=0.7,
        palettes={2: ((20, 20, 20),)},
        shades={1: (0, 0.75)},
        forward=(1.0, 0.0, 0.0),
        yaw_range=(-35.0, 35.0),
        turn_prob=0.5,
    )


QUADRUPED_RIG = _quadruped_rig()
"""The rig of :data:`QUADRUPED`."""

_RIGS: dict[str, FigureRig] = {"posetrack": HUMAN_RIG, "quadruped": QUADRUPED_RIG}


def register_rig(schema_name: str, rig: FigureRig, *, overwrite: bool = False) -> FigureRig:
    """Make ``rig`` the default rig of the schema called ``schema_name``; returns it.

    Args:
        schema_name: the schema's ``name`` (case-insensitive).
        rig: the rig.
        overwrite: replace an existing rig of that schema. Default ``False`` (raise).
    """
    key = schema_name.lower()
    if key in _RIGS and _RIGS[key] is not rig and not overwrite:
        raise KpdiffInputError(f"a figure rig for schema {schema_name!r} is already registered")
    _RIGS[key] = rig
    return rig


def get_rig(schema: KeypointSchema | str) -> FigureRig:
    """The registered rig of a schema (``posetrack`` and ``quadruped`` are built in)."""
    name = schema if isinstance(schema, str) else schema.name
    if name.lower() not in _RIGS:
        raise KpdiffInputError(
            f"schema {name!r} has no figure rig; pass SyntheticConfig(rig=FigureRig(...)) or call "
            f"register_rig; known: {sorted(_RIGS)}"
        )
    return _RIGS[name.lower()]


# ------------------------------------------------------------------------------------ the config
@dataclass(frozen=True)
class SyntheticConfig:
    """What :func:`build_synthetic_dataset` draws.

    Args:
        num_videos: videos per split. Default ``20``.
        frames_per_video: frames per video. Default ``30``.
        image_size: ``(H, W)`` of the frames. Default ``(240, 320)``.
        persons_per_video: inclusive range of annotated figures per video. Default ``(1, 3)``.
        person_height: range of figure sizes in pixels (rest-pose height). Default ``(100, 180)``.
        seed: everything is a function of it. Default ``0``.
        schema: keypoint schema or its name. Default ``"posetrack"``.
        rig: the figure rig; ``None`` → :func:`get_rig` of the schema.
        labelled_every: frame ``t`` is labelled when ``t % labelled_every == 0``. Default ``1``.
        occluder_prob: per video, probability of 1–2 moving occluders. Default ``0.7``.
        translucent_prob: probability that an occluder is see-through (joints under it stay
            labelled). Default ``0.4``.
        blur_prob: per frame, probability of camera-shake motion blur (never two blurred frames
            in a row). Default ``0.12``.
        ignore_region_prob: per video, probability of an ignore region with unlabelled figures
            inside. Default ``0.3``.
        camera_speed: maximum camera pan in pixels per frame. Default ``2.0``.
        label_occluded: keep joints hidden by opaque occluders or other figures labelled
            (``v = 1``) instead of absent. Default ``False``.
        min_visible_joints: a figure is annotated on a frame only with this many labelled joints.
            Default ``3``.
        det_jitter: detector box centre/size noise, relative to the box. Default ``0.05``.
        det_miss_prob: probability that the detector misses a figure. Default ``0.05``.
        det_false_positives: mean number of spurious detector boxes per frame. Default ``0.3``.
        jpeg_quality: JPEG quality of the frames. Default ``90``.
        head_scale: the annotated head box (``bbox_head``) is the drawn head's box scaled by
            this about its centre; it sets the PCKh threshold of the metric. Default
            :data:`HEAD_SCALE_POSETRACK18` (real PoseTrack18's head-to-body ratio; generator
            version 1 used ``1.0``).
        split_sizes: ``{split: (num_videos, frames_per_video)}`` for splits that differ from
            ``num_videos`` × ``frames_per_video`` (e.g. thousands of short training videos beside
            a fixed validation set). A video's content depends on its split, index, the seed and
            its frame count only. Default ``{}``.
    """

    num_videos: int = 20
    frames_per_video: int = 30
    image_size: tuple[int, int] = (240, 320)
    persons_per_video: tuple[int, int] = (1, 3)
    person_height: tuple[float, float] = (100.0, 180.0)
    seed: int = 0
    schema: KeypointSchema | str = "posetrack"
    rig: FigureRig | None = None
    labelled_every: int = 1
    occluder_prob: float = 0.7
    translucent_prob: float = 0.4
    blur_prob: float = 0.12
    ignore_region_prob: float = 0.3
    camera_speed: float = 2.0
    label_occluded: bool = False
    min_visible_joints: int = 3
    det_jitter: float = 0.05
    det_miss_prob: float = 0.05
    det_false_positives: float = 0.3
    jpeg_quality: int = 90
    head_scale: float = HEAD_SCALE_POSETRACK18
    split_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "split_sizes", {str(k): tuple(v) for k, v in dict(self.split_sizes).items()}
        )
        checks = {
            "num_videos": 1 <= self.num_videos <= 9999,
            "frames_per_video": 1 <= self.frames_per_video <= 9999,
            "image_size": len(self.image_size) == 2 and min(self.image_size) >= 32,
            "persons_per_video": 0 <= self.persons_per_video[0] <= self.persons_per_video[1],
            "person_height": 8 <= self.person_height[0] <= self.person_height[1],
            "labelled_every": self.labelled_every >= 1,
            "camera_speed": self.camera_speed >= 0,
            "min_visible_joints": self.min_visible_joints >= 1,
            "det_jitter": self.det_jitter >= 0,
            "det_false_positives": self.det_false_positives >= 0,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "head_scale": 0 < self.head_scale < 10,
            "split_sizes": all(
                len(v) == 2 and 1 <= v[0] <= 9999 and 1 <= v[1] <= 9999
                for v in self.split_sizes.values()
            ),
        }
        for name in ("occluder_prob", "translucent_prob", "blur_prob", "ignore_region_prob"):
            checks[name] = 0 <= getattr(self, name) <= 1
        checks["det_miss_prob"] = 0 <= self.det_miss_prob <= 1
        for name, ok in checks.items():
            if not ok:
                raise KpdiffInputError(
                    f"SyntheticConfig.{name}: invalid value {getattr(self, name)!r}"
                )

    def size_of(self, split: str) -> tuple[int, int]:
        """``(num_videos, frames_per_video)`` of ``split``."""
        return self.split_sizes.get(split, (self.num_videos, self.frames_per_video))

    def fingerprint(self, splits: Sequence[str] = ("train", "val")) -> str:
        """Hex SHA-256 of the config, the splits and the generator version (the build's id)."""
        payload = {
            "version": GENERATOR_VERSION,
            "splits": list(splits),
            "config": _canonical(self),
            "schema": _canonical(get_schema(self.schema)),
            "rig": _canonical(self.rig or get_rig(get_schema(self.schema))),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(obj: Any) -> Any:
    """A JSON-able, order-stable form of (nested) dataclasses, mappings and sequences."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _canonical(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------------- the builder
MANIFEST = "synthetic.json"
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


def build_synthetic_dataset(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    splits: Sequence[str] = ("train", "val"),
    workers: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Render the synthetic dataset into ``root`` (PoseTrack18 layout, see the module doc).

    The build goes into a temporary folder next to ``root`` that is renamed into place when it
    is complete, so ``root`` never holds a half-written dataset. When ``root`` already holds a
    build with the same :meth:`SyntheticConfig.fingerprint`, nothing is done; a build with
    another fingerprint is replaced.

    Args:
        root: the dataset folder (created; its parent must be writable).
        config: what to draw. Default ``SyntheticConfig()`` (20 videos × 30 frames per split).
        splits: split names (identifiers). Video ``i`` of a split is ``0Ciiii_synthetic`` with
            ``C`` = 1 for train, 2 val, 3 test (4–9 for other names). Default
            ``("train", "val")``.
        workers: render videos in this many processes (the output is the same for any number).
            Default ``None``: the machine's CPU count.
        progress: a videos/s bar per split on stderr; ``None`` (default): when stderr is a
            terminal.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        KpdiffInputError: ``root`` exists and is neither empty nor a synthetic build; bad splits.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits) or not all(_valid_split(s) for s in splits):
        raise KpdiffInputError(f"splits: expected distinct names like 'train', 'val', got {splits}")
    codes = [_split_code(s) for s in splits]
    if len(set(codes)) != len(codes):
        raise KpdiffInputError(f"splits: {splits} map to the same video ids {codes}; rename one")
    digest = config.fingerprint(splits)
    if _build_hash(root) == digest:
        return root
    if root.exists() and _build_hash(root) is None and (root.is_file() or any(root.iterdir())):
        raise KpdiffInputError(
            f"root: {root} exists and is not a kpdiff synthetic dataset; give a new or empty folder"
        )
    schema = get_schema(config.schema)
    kin = _Kinematics.build(schema, config.rig or get_rig(schema))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        videos: dict[str, list[str]] = {}
        for split in splits:
            videos[split] = _build_split(tmp, split, config, kin, workers, progress)
        manifest = {
            "hash": digest,
            "generator_version": GENERATOR_VERSION,
            "splits": list(splits),
            "videos": videos,
            "config": _canonical(config),
        }
        write_json_atomic(manifest, tmp / MANIFEST)
        _swap_into_place(tmp, root, digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _valid_split(split: str) -> bool:
    return isinstance(split, str) and split.isidentifier()


def _split_code(split: str) -> int:
    """The split's leading video-id digit: 1 train, 2 val, 3 test, 4–9 other names (hashed)."""
    return _SPLIT_CODES.get(split, 4 + int(hashlib.sha256(split.encode()).hexdigest(), 16) % 6)


def _build_hash(root: Path) -> str | None:
    try:
        return json.loads((root / MANIFEST).read_text())["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _swap_into_place(tmp: Path, root: Path, digest: str) -> None:
    """Rename the finished build ``tmp`` to ``root``, moving an older build out of the way."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / "data")
    try:
        os.rename(tmp, root)
    except OSError:
        if _build_hash(root) != digest:  # somebody else's build, not ours: a real failure
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_split(
    out: Path,
    split: str,
    cfg: SyntheticConfig,
    kin: _Kinematics,
    workers: int,
    bar: bool | None = None,
) -> list[str]:
    """Render every video of one split (``workers`` processes); returns the video names.

    Each video draws from its own stream, ``SeedSequence([seed, split code, index])``, so the
    output does not depend on ``workers`` and no two splits share a random draw.
    """
    code = _split_code(split)
    videos, frames = cfg.size_of(split)
    cfg = dataclasses.replace(cfg, num_videos=videos, frames_per_video=frames, split_sizes={})
    parallel = workers > 1 and videos * frames >= PARALLEL_MIN_FRAMES and _spawnable(cfg)
    if parallel:
        import multiprocessing

        # spawn, not fork: a forked child inherits the parent's OpenCV / OpenMP thread pools
        # mid-state and can hang. Spawned workers rebuild the built-in schema and rig by name
        # (schemas and rigs hold mapping proxies, which do not pickle).
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, videos), initializer=_start_worker,
                          initargs=(out, split, code, cfg)) as pool:  # fmt: skip
            chunk = max(1, videos // (8 * workers))
            built = pool.imap(_build_video, range(videos), chunksize=chunk)
            results = list(progress(built, total=videos, desc=split, unit="video", enabled=bar))
    else:
        global _SPLIT_JOB
        _SPLIT_JOB = (out, split, code, cfg, kin)
        try:
            built = (_build_video(i) for i in range(videos))
            results = list(progress(built, total=videos, desc=split, unit="video", enabled=bar))
        finally:
            _SPLIT_JOB = None
    detections = [box for _, dets in results for box in dets]
    write_json_atomic(detections, out / "detections" / f"{split}_boxes.json")
    return [name for name, _ in results]


_SPLIT_JOB: tuple[Path, str, int, SyntheticConfig, _Kinematics] | None = None
"""``(out, split, code, config, kinematics)`` of the split being built (see ``_build_split``)."""

PARALLEL_MIN_FRAMES = 2000
"""Splits with fewer frames are rendered in-process (starting workers costs seconds)."""

_BUILTIN = {
    "posetrack": (get_schema("posetrack"), HUMAN_RIG),
    "quadruped": (QUADRUPED, QUADRUPED_RIG),
}


def _spawnable(cfg: SyntheticConfig) -> bool:
    """Whether a spawned worker can rebuild ``cfg``'s schema and rig by name: the built-in ones,
    not overridden. Other schemas and rigs are rendered in-process."""
    if cfg.rig is not None or not isinstance(cfg.schema, str):
        return False
    name = cfg.schema.lower()
    if name not in _BUILTIN:
        return False
    schema, rig = _BUILTIN[name]
    return get_schema(name) is schema and get_rig(schema) is rig


def _start_worker(out: Path, split: str, code: int, cfg: SyntheticConfig) -> None:
    """A spawned build worker: one OpenCV thread, and the split's job rebuilt from its name."""
    global _SPLIT_JOB
    cv2.setNumThreads(1)
    schema = get_schema(cfg.schema)
    _SPLIT_JOB = (out, split, code, cfg, _Kinematics.build(schema, get_rig(schema)))


def _build_video(i: int) -> tuple[str, list[dict]]:
    """Render, write and annotate video ``i`` of the split being built; returns its name and
    detector boxes."""
    assert _SPLIT_JOB is not None
    out, split, code, cfg, kin = _SPLIT_JOB
    name = f"{code * 10000 + i:06d}_synthetic"
    scene_seed, det_seed = np.random.SeedSequence([cfg.seed, code, i]).spawn(2)
    video, dets = _render_video(
        out, f"images/{split}/{name}", name, code * 10000 + i, cfg, kin,
        np.random.default_rng(scene_seed), np.random.default_rng(det_seed),
    )  # fmt: skip
    write_posetrack18(video, out / "annotations" / split / f"{name}.json", schema=kin.schema)
    return name, dets


# ------------------------------------------------------------------------------------ kinematics
@dataclass
class _Kinematics:
    """A rig resolved against a schema: indices instead of names, a traversal order, bones."""

    schema: KeypointSchema
    rig: FigureRig
    parent: np.ndarray  # [K] int, -1 at the root
    order: list[int]  # parents before children
    bones: np.ndarray  # [K, 3] rest offset from the parent
    parts: list[tuple[str, np.ndarray, float, int, float]]  # shape, joints, width, material, bias
    root: int
    materials: int
    head: tuple[int, int] | None
    extent: tuple[float, float, float]  # rest (top, bottom) y and max distance from the root

    @classmethod
    def build(cls, schema: KeypointSchema, rig: FigureRig) -> _Kinematics:
        names = schema.keypoints
        where = f"FigureRig for schema {schema.name!r}"
        missing = [n for n in names if n not in rig.rest]
        unknown = [n for n in rig.rest if n not in names]
        if missing or unknown:
            raise KpdiffInputError(f"{where}: rest pose lacks {missing}, has unknown {unknown}")
        idx = {n: i for i, n in enumerate(names)}

        def index(name: str, what: str) -> int:
            if name not in idx:
                raise KpdiffInputError(f"{where}: {what} names unknown joint {name!r}")
            return idx[name]

        root = index(rig.root, "root")
        parent = np.full(len(names), -1)
        if rig.parents:
            for child, par in rig.parents.items():
                parent[index(child, "parents")] = index(par, "parents")
        else:  # breadth-first tree of the skeleton
            seen, queue = {root}, [root]
            for j in queue:
                for a, b in schema.skeleton:
                    for u, v in ((a, b), (b, a)):
                        if u == j and v not in seen:
                            parent[v], seen = j, seen | {v}
                            queue.append(v)
        order, queue = [], [root]
        while queue:
            j = queue.pop(0)
            order.append(j)
            queue += [c for c in range(len(names)) if parent[c] == j and c != root]
        if parent[root] != -1 or len(order) != len(names):
            lost = sorted(set(names) - {names[j] for j in order})
            raise KpdiffInputError(f"{where}: joints {lost} are not connected to root {rig.root!r}")
        rest = np.array([rig.rest[n] for n in names], np.float64)
        bones = rest - np.where(parent[:, None] >= 0, rest[parent], rest)
        specs = rig.parts or tuple(
            Part((names[a], names[b]), 0.06, i % 3) for i, (a, b) in enumerate(schema.skeleton)
        )
        parts = []
        for p in specs:
            joints = np.array([index(n, "a part") for n in p.joints])
            if len(joints) < (3 if p.shape == "polygon" else 2):
                raise KpdiffInputError(f"{where}: part {p.joints} has too few joints for {p.shape}")
            parts.append((p.shape, joints, p.width, p.material, p.depth_bias))
        for motion in rig.motions.values():
            for s in motion.swings:
                index(s.joint, "a motion")
        head = None if rig.head is None else tuple(index(n, "head") for n in rig.head)
        materials = rig.materials or 1 + max((p[3] for p in parts), default=0)
        reach = float(np.linalg.norm(rest - rest[root], axis=1).max())
        extent = (float(rest[:, 1].min() - rest[root, 1]), float(rest[:, 1].max() - rest[root, 1]))
        return cls(
            schema, rig, parent, order, bones, parts, root, materials, head, (*extent, reach)
        )

    def animate(self, swings: list[tuple[int, str, np.ndarray]], frames: int) -> np.ndarray:
        """Joint positions ``[T, K, 3]`` relative to the root for per-frame local rotations.

        Args:
            swings: ``(joint, axis, angles [T] in radians)``, applied in the given order.
            frames: ``T``.
        """
        local: dict[int, np.ndarray] = {}
        for j, axis, angles in swings:
            r = _rotation(axis, angles)
            local[j] = local[j] @ r if j in local else r
        eye = np.broadcast_to(np.eye(3), (frames, 3, 3))
        rot: dict[int, np.ndarray] = {}
        pos = np.zeros((len(self.parent), frames, 3))
        for j in self.order:
            p = self.parent[j]
            base = eye if p < 0 else rot[p]
            rot[j] = base @ local[j] if j in local else base
            if p >= 0:
                pos[j] = pos[p] + rot[j] @ self.bones[j]
        return pos.transpose(1, 0, 2)


def _rotation(axis: str, angles: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[T, 3, 3]`` about a figure axis by ``angles [T]`` (radians)."""
    c, s = np.cos(angles), np.sin(angles)
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)


# --------------------------------------------------------------------------------------- figures
@dataclass
class _Figure:
    """One animated figure over a video, in world (background) pixel coordinates."""

    xy: np.ndarray  # [T, K, 2]
    z: np.ndarray  # [T, K] depth in figure units (larger = further)
    scale: np.ndarray  # [T] pixels per figure unit
    textures: np.ndarray  # [M, S, S, 3] uint8, centred on the root joint
    track_id: int | None  # None: an unannotated figure inside an ignore region


def _make_figure(
    rng: np.random.Generator,
    kin: _Kinematics,
    frames: int,
    height: float,
    x_mid: float,
    feet_y: float,
    track_id: int | None,
    travel: bool = True,
) -> _Figure:
    """Draw a motion, its timing, a yaw, a path and textures for one figure."""
    rig = kin.rig
    t = np.arange(frames, dtype=np.float64)
    swings: list[tuple[int, str, np.ndarray]] = []
    speed = 0.0
    if rig.motions:
        names = sorted(rig.motions)
        weights = np.array([rig.motions[n].weight for n in names], np.float64)
        motion = rig.motions[names[rng.choice(len(names), p=weights / weights.sum())]]
        freq, phase0, gain = rng.uniform(*motion.frequency), rng.random(), rng.uniform(0.75, 1.25)
        for s in motion.swings:
            angle = s.offset + gain * s.amplitude * np.sin(
                2 * np.pi * (phase0 + freq * t + s.phase)
            )
            swings.append((kin.schema.index(s.joint), s.axis, np.radians(angle)))
        speed = motion.speed * freq if travel else 0.0
    for j in range(len(kin.parent)):  # a slow individual wiggle on top of the cycle
        amp, f, ph = rng.uniform(0, 5), rng.uniform(0.01, 0.06), rng.random()
        swings.append((j, "z", np.radians(amp * np.sin(2 * np.pi * (ph + f * t)))))
    yaw = rng.uniform(*rig.yaw_range) + (180.0 if rng.random() < rig.turn_prob else 0.0)
    turn = _rotation("y", np.radians(np.array([yaw])))[0]
    pose = kin.animate(swings, frames) @ turn.T  # [T, K, 3]
    heading = (turn @ np.asarray(rig.forward, np.float64))[0]

    growth = rng.uniform(-0.004, 0.004)
    scale = height * (1 + growth * (t - frames / 2))
    root = np.stack(
        [x_mid + speed * height * heading * (t - frames / 2), feet_y - kin.extent[1] * scale], 1
    )
    xy = root[:, None] + scale[:, None, None] * pose[..., :2]
    size = int(2 * 1.3 * kin.extent[2] * scale.max()) + 8
    return _Figure(xy, pose[..., 2], scale, _figure_textures(rng, kin, size), track_id)


def _figure_textures(rng: np.random.Generator, kin: _Kinematics, size: int) -> np.ndarray:
    """``[M, S, S, 3]`` textures: palette colours or random ones, darker copies per ``shades``."""
    rig = kin.rig
    out = np.empty((kin.materials, size, size, 3), np.uint8)
    shaded = {m for m in rig.shades if m < kin.materials}
    for m in range(kin.materials):
        if m in shaded:
            continue
        palette = rig.palettes.get(m)
        color = (
            np.array(palette[rng.integers(len(palette))], np.float32)
            if palette
            else rng.uniform(20, 235, 3).astype(np.float32)
        )
        out[m] = _texture(rng, size, color, patterned=palette is None)
    for m in sorted(shaded):
        src, gain = rig.shades[m]
        out[m] = (out[src].astype(np.float32) * gain).astype(np.uint8)
    return out


def _texture(
    rng: np.random.Generator, size: int, color: np.ndarray, *, patterned: bool
) -> np.ndarray:
    """A ``[S, S, 3]`` uint8 texture around ``color``: plain, stripes, checks or blotches."""
    small = max(size // 2, 4)
    kind = rng.integers(4) if patterned else 0
    if kind == 0:
        pattern = cv2.resize(rng.random((4, 4)).astype(np.float32), (small, small)) * 0.5
    elif kind == 1:
        yy, xx = np.mgrid[0:small, 0:small].astype(np.float32)
        a, period = rng.uniform(0, np.pi), rng.uniform(3, 10)
        pattern = (np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi / period)) > 0).astype(
            np.float32
        )
    elif kind == 2:
        yy, xx = np.mgrid[0:small, 0:small]
        cell = int(rng.integers(3, 9))
        pattern = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        blobs = rng.random((small // 6 + 2, small // 6 + 2)).astype(np.float32)
        pattern = (cv2.resize(blobs, (small, small)) > 0.55).astype(np.float32)
    other = color * rng.uniform(0.35, 0.75) if rng.random() < 0.6 else rng.uniform(20, 235, 3)
    tex = color * (1 - pattern[..., None]) + other.astype(np.float32) * pattern[..., None]
    tex += rng.normal(0, 6, (small, small, 1)).astype(np.float32)
    tex = cv2.resize(np.clip(tex, 0, 255).astype(np.uint8), (size, size), cv2.INTER_NEAREST)
    return tex


# ----------------------------------------------------------------------------------- the scenes
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cluttered textured RGB background ``[h, w, 3]`` uint8."""
    field_ = cv2.resize(rng.uniform(30, 225, (3, 4, 3)).astype(np.float32), (w, h))
    field_ += cv2.resize(
        rng.normal(0, 22, (h // 10 + 1, w // 10 + 1, 3)).astype(np.float32), (w, h)
    )
    img = np.clip(field_, 0, 255).astype(np.uint8)
    n = int(40 * h * w / (320 * 240))
    for _ in range(n):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(w)), int(rng.integers(h))
        r = int(rng.integers(4, max(5, min(h, w) // 6)))
        kind = rng.integers(5)
        if kind == 0:
            cv2.rectangle(
                img, (x - r, y - r // 2), (x + r, y + r), color, -1 if rng.random() < 0.7 else 2
            )
        elif kind == 1:
            cv2.circle(img, (x, y), r, color, -1)
        elif kind == 2:
            end = (x + int(rng.integers(-3 * r, 3 * r)), y + int(rng.integers(-3 * r, 3 * r)))
            cv2.line(img, (x, y), end, color, int(rng.integers(1, 6)))
        elif kind == 3:
            pts = np.array([x, y]) + rng.integers(-r, r + 1, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(img, [pts.astype(np.int32)], color)
        else:  # a skin-coloured limb-like distractor
            skin = HUMAN_RIG.palettes[0][int(rng.integers(len(HUMAN_RIG.palettes[0])))]
            end = (x + int(rng.integers(-2 * r, 2 * r)), y + int(rng.integers(-2 * r, 2 * r)))
            cv2.line(img, (x, y), end, tuple(int(c) for c in skin), int(rng.integers(4, 14)))
    return cv2.GaussianBlur(img, (3, 3), 0)


@dataclass
class _Occluder:
    """A sprite moving across the frame (opaque: hides joints; translucent: only degrades)."""

    sprite: np.ndarray  # [h, w, 3] uint8
    mask: np.ndarray  # [h, w] bool
    corner: np.ndarray  # [T, 2] top-left corner in frame pixels
    alpha: float


def _make_occluder(
    rng: np.random.Generator, target: np.ndarray, size: float, h_img: int, translucent: float
) -> _Occluder:
    """An occluder that passes over ``target [T, 2]`` (frame pixels) in the middle of the video."""
    frames = len(target)
    kind = rng.integers(4)
    if kind == 0:  # a pole sweeping sideways
        h, w = int(h_img * 1.6), int(rng.uniform(0.1, 0.3) * size)
        velocity = np.array([rng.choice([-1, 1]) * rng.uniform(3, 9), 0.0])
    else:
        h = w = int(rng.uniform(0.25, 0.55) * size)
        angle = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(3, 9) * np.array([np.cos(angle), np.sin(angle)])
    h, w = max(h, 4), max(w, 4)
    mask = np.zeros((h, w), np.uint8)
    if kind <= 1:
        mask[:] = 1
    elif kind == 2:
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
    else:
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.5, 1.0, n)[:, None] * np.array([w / 2, h / 2])
        pts = np.array([w / 2, h / 2]) + rad * np.stack([np.cos(ang), np.sin(ang)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    sprite = _texture(rng, max(h, w), rng.uniform(20, 235, 3).astype(np.float32), patterned=True)
    t_star = int(rng.integers(frames // 5, max(frames // 5 + 1, 4 * frames // 5)))
    t = np.arange(frames)[:, None]
    corner = target[t_star] + velocity * (t - t_star) * (h_img / 240) - np.array([w / 2, h / 2])
    alpha = rng.uniform(0.5, 0.8) if rng.random() < translucent else 1.0
    return _Occluder(sprite[:h, :w], mask.astype(bool), corner, float(alpha))


# -------------------------------------------------------------------------------------- a video
_OCCLUDER_RANK = 30000


@dataclass
class _Drawn:
    """Where a figure landed on a frame: its silhouette box and pixels."""

    box: np.ndarray  # [4] xywh, tight around the silhouette (pixel edges)
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1
    pixels: tuple[np.ndarray, np.ndarray]  # silhouette pixel indices inside the roi


@dataclass
class _Scene:
    """Everything of a video that is drawn before its frames are."""

    background: np.ndarray  # [H + 2 my, W + 2 mx, 3] uint8, the world
    camera: np.ndarray  # [T, 2] int, the frame's top-left corner in the world
    blur: list[np.ndarray | None]  # per frame: a motion-blur kernel or None
    figures: list[_Figure]  # annotated, track id = position
    crowd: list[_Figure]  # unannotated, inside `region`
    region: np.ndarray | None  # [P, 2] ignore polygon in world pixels
    occluders: list[_Occluder]
    noise: np.ndarray  # [H + 16, W + 16, 1] int16 sensor noise, sliced at random per frame
    gains: np.ndarray  # [T] brightness flicker


def _make_scene(rng: np.random.Generator, cfg: SyntheticConfig, kin: _Kinematics) -> _Scene:
    """Camera path and shake, background, figures, ignore region, occluders, noise."""
    frames, (h_img, w_img) = cfg.frames_per_video, cfg.image_size
    t = np.arange(frames, dtype=np.float64)[:, None]
    blurred = rng.random(frames) < cfg.blur_prob
    for i in range(1, frames):
        blurred[i] &= not blurred[i - 1]  # a blurred frame has sharp neighbours
    length, angle = rng.uniform(5, 13, frames) * h_img / 240, rng.uniform(0, np.pi, frames)
    blur = [_blur_kernel(length[i], angle[i]) if blurred[i] else None for i in range(frames)]
    pan = rng.uniform(-1, 1, 2) * cfg.camera_speed * np.array([1.0, 0.3])
    wobble = rng.uniform(0, 6, 2) * np.sin(
        2 * np.pi * rng.uniform(0.02, 0.08) * t + rng.uniform(0, 7, 2)
    )
    shake = (blurred * length / 2)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    camera = pan * (t - frames / 2) + wobble + shake
    margin = np.ceil(np.abs(camera).max(0)).astype(int) + 2
    background = _background(rng, h_img + 2 * margin[1], w_img + 2 * margin[0])
    camera = np.round(camera + margin).astype(int)

    span = kin.extent[1] - kin.extent[0]
    figures = []
    for track in range(int(rng.integers(cfg.persons_per_video[0], cfg.persons_per_video[1] + 1))):
        height = rng.uniform(*cfg.person_height)
        low = min(max(0.6 * h_img, 0.92 * span * height), h_img)  # keep most heads in view
        feet = margin[1] + rng.uniform(low, 1.04 * h_img)
        x_mid = margin[0] + rng.uniform(0.12, 0.88) * w_img
        figures.append(_make_figure(rng, kin, frames, height, x_mid, feet, track))
    crowd, region = [], None
    if rng.random() < cfg.ignore_region_prob:
        crowd, region = _ignore_region(rng, kin, cfg, margin)
    occluders = []
    if figures and rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            fig = figures[int(rng.integers(len(figures)))]
            target = fig.xy[:, int(rng.integers(len(kin.parent)))] - camera
            size = float(fig.scale.mean())
            occluders.append(_make_occluder(rng, target, size, h_img, cfg.translucent_prob))
    noise = rng.normal(0, rng.uniform(0, 4), (h_img + 16, w_img + 16, 1)).astype(np.int16)
    gains = 1 + rng.normal(0, 0.04, frames)
    return _Scene(background, camera, blur, figures, crowd, region, occluders, noise, gains)


def _render_frame(
    scene: _Scene, i: int, kin: _Kinematics, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[_Figure], list[_Drawn | None]]:
    """Frame ``i``: RGB image, the label map (who is on top where), figures in drawing order."""
    h_img, w_img = scene.noise.shape[0] - 16, scene.noise.shape[1] - 16
    ox, oy = scene.camera[i]
    frame = scene.background[oy : oy + h_img, ox : ox + w_img].copy()
    label = np.full((h_img, w_img), -1, np.int16)
    order = scene.crowd + sorted(scene.figures, key=lambda f: f.xy[i, :, 1].max())  # far first
    drawn = [_draw_figure(frame, label, f, i, r, scene.camera[i], kin) for r, f in enumerate(order)]
    for occ in scene.occluders:
        _draw_occluder(frame, label, occ, i)
    if scene.blur[i] is not None:
        frame = cv2.filter2D(frame, -1, scene.blur[i])
    frame = cv2.convertScaleAbs(frame, alpha=float(scene.gains[i]))
    dy, dx = (int(v) for v in rng.integers(0, 16, 2))
    frame = np.clip(frame + scene.noise[dy : dy + h_img, dx : dx + w_img], 0, 255)
    return frame.astype(np.uint8), label, order, drawn


def _render_video(
    out: Path,
    image_dir: str,
    name: str,
    vid_num: int,
    cfg: SyntheticConfig,
    kin: _Kinematics,
    rng: np.random.Generator,
    det_rng: np.random.Generator,
) -> tuple[VideoAnnotation, list[dict]]:
    """Render, write and annotate one video; returns its annotation and its detector boxes."""
    scene = _make_scene(rng, cfg, kin)
    video, detections = VideoAnnotation(name), []
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    for i in range(cfg.frames_per_video):
        frame, label, order, drawn = _render_frame(scene, i, kin, rng)
        path = f"{image_dir}/{i:06d}.jpg"
        (out / path).write_bytes(cv2.imencode(".jpg", frame[..., ::-1], jpeg)[1].tobytes())
        labelled = i % cfg.labelled_every == 0
        regions = []
        if labelled and scene.region is not None:
            regions = _clip_polygon(scene.region - scene.camera[i], *label.shape[::-1])
        annotation = FrameAnnotation(
            path, i, image_id=10_000_000_000 + vid_num * 10_000 + i, is_labeled=labelled,
            ignore_regions=regions,
        )  # fmt: skip
        for rank, (fig, d) in enumerate(zip(order, drawn, strict=True)):
            if labelled and fig.track_id is not None and d is not None:
                person = _annotate(fig, i, rank, d, label, scene.camera[i], kin, cfg, regions)
                if person is not None:
                    annotation.persons.append(person)
        video.frames.append(annotation)
        detections += _detections(det_rng, cfg, drawn, label, path)
    return video, detections


def _ignore_region(
    rng: np.random.Generator, kin: _Kinematics, cfg: SyntheticConfig, margin: np.ndarray
) -> tuple[list[_Figure], np.ndarray]:
    """2–3 small unannotated figures and a polygon ``[P, 2]`` (world pixels) around them."""
    h_img, w_img = cfg.image_size
    frames = cfg.frames_per_video
    height = rng.uniform(0.4, 0.6) * cfg.person_height[0]
    cx, feet = margin[0] + rng.uniform(0.2, 0.8) * w_img, margin[1] + rng.uniform(0.35, 0.6) * h_img
    crowd = [
        _make_figure(
            rng, kin, frames, height * rng.uniform(0.85, 1.15), cx + rng.uniform(-0.1, 0.1) * w_img,
            feet + rng.uniform(-0.05, 0.05) * h_img, None, travel=False,
        )
        for _ in range(int(rng.integers(2, 4)))
    ]  # fmt: skip
    pts = np.concatenate([f.xy.reshape(-1, 2) for f in crowd])
    lo, hi = pts.min(0) - 0.1 * height, pts.max(0) + 0.1 * height
    n = int(rng.integers(6, 11))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = (hi - lo) / 2 * 1.45 * rng.uniform(1.0, 1.15, (n, 1))
    return crowd, (lo + hi) / 2 + radius * np.stack([np.cos(ang), np.sin(ang)], 1)


def _clip_polygon(poly: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """The parts ``[P, 2]`` of a polygon inside the image (shapely intersection)."""
    from shapely.geometry import Polygon, box

    clipped = Polygon(poly).buffer(0).intersection(box(0, 0, width - 1, height - 1))
    parts = getattr(clipped, "geoms", [clipped])
    return [
        np.round(np.asarray(p.exterior.coords)[:-1], 2)
        for p in parts
        if isinstance(p, Polygon) and p.area > 20
    ]


def _draw_figure(
    frame: np.ndarray,
    label: np.ndarray,
    fig: _Figure,
    t: int,
    rank: int,
    cam: np.ndarray,
    kin: _Kinematics,
) -> _Drawn | None:
    """Paint a figure (back to front) on ``frame``; mark its pixels ``rank`` in ``label``."""
    h_img, w_img = label.shape
    xy, scale = fig.xy[t] - cam, fig.scale[t]
    pad = 2.0 + scale * max((p[2] / 2 for p in kin.parts if p[0] != "ellipse"), default=0.0)
    for shape, joints, ratio, _, _ in kin.parts:  # an ellipse's minor axis sticks out sideways
        if shape == "ellipse":
            pad = max(pad, 2.0 + ratio * np.hypot(*(xy[joints[1]] - xy[joints[0]])) / 2)
    x0, y0 = np.maximum(np.floor(xy.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(xy.max(0) + pad).astype(int) + 1, (w_img, h_img))
    if x0 >= x1 or y0 >= y1:
        return None
    mat = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((xy - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits for cv2 `shift`
    depth = [fig.z[t, joints].mean() + bias for _, joints, _, _, bias in kin.parts]
    for k in np.argsort(-np.asarray(depth), kind="stable"):
        shape, joints, width, material, _ = kin.parts[k]
        _draw_part(mat, shape, pts[joints], width, scale, material + 1)
    pixels = np.nonzero(mat)
    if pixels[0].size == 0:
        return None
    size = fig.textures.shape[1]
    root = np.round(xy[kin.root]).astype(int)
    ty = np.clip(pixels[0] + (y0 - root[1] + size // 2), 0, size - 1)
    tx = np.clip(pixels[1] + (x0 - root[0] + size // 2), 0, size - 1)
    frame[y0:y1, x0:x1][pixels] = fig.textures[mat[pixels] - 1, ty, tx]
    label[y0:y1, x0:x1][pixels] = rank
    lo = np.array([pixels[1].min() + x0, pixels[0].min() + y0], np.float64)
    hi = np.array([pixels[1].max() + x0, pixels[0].max() + y0], np.float64)
    return _Drawn(np.concatenate([lo - 0.5, hi - lo + 1]), (y0, y1, x0, x1), pixels)


def _draw_part(
    mat: np.ndarray, shape: str, pts: np.ndarray, width: float, scale: float, value: int
) -> None:
    """Rasterise one part into ``mat`` (``pts`` in 1/16 pixels)."""
    thick = max(1, round(width * scale))
    if shape == "polygon":
        cv2.fillPoly(mat, [pts], value, cv2.LINE_8, 4)
        cv2.polylines(mat, [pts], True, value, thick, cv2.LINE_8, 4)
        return
    a, b = (tuple(int(v) for v in p) for p in pts[:2])
    if shape == "ellipse":
        half = float(np.hypot(b[0] - a[0], b[1] - a[1])) / 2
        angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
        centre = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        axes = (max(int(half), 8), max(int(half * width), 8))
        cv2.ellipse(mat, centre, axes, angle, 0, 360, value, -1, cv2.LINE_8, 4)
    elif a == b:
        cv2.circle(mat, a, max(int(width * scale * 8), 8), value, -1, cv2.LINE_8, 4)
    else:
        cv2.line(mat, a, b, value, thick, cv2.LINE_8, 4)


def _draw_occluder(frame: np.ndarray, label: np.ndarray, occ: _Occluder, t: int) -> None:
    h_img, w_img = label.shape
    h, w = occ.mask.shape
    x, y = (round(float(v)) for v in occ.corner[t])
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, w_img), min(y + h, h_img)
    if x0 >= x1 or y0 >= y1:
        return
    mask = occ.mask[y0 - y : y1 - y, x0 - x : x1 - x]
    sprite = occ.sprite[y0 - y : y1 - y, x0 - x : x1 - x][mask].astype(np.float32)
    roi = frame[y0:y1, x0:x1]
    roi[mask] = (occ.alpha * sprite + (1 - occ.alpha) * roi[mask]).astype(np.uint8)
    if occ.alpha >= 1:
        label[y0:y1, x0:x1][mask] = _OCCLUDER_RANK


def _blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel: linear motion blur of ``length`` pixels at ``angle`` radians."""
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), np.float32)
    c, d = (size - 1) / 2, (length - 1) / 2 * np.array([math.cos(angle), math.sin(angle)])
    p, q = (tuple(round(v * 16) for v in c + s * d) for s in (-1, 1))
    cv2.line(kernel, p, q, 1.0, 1, cv2.LINE_AA, 4)
    return kernel / kernel.sum()


def _annotate(
    fig: _Figure,
    t: int,
    rank: int,
    drawn: _Drawn,
    label: np.ndarray,
    cam: np.ndarray,
    kin: _Kinematics,
    cfg: SyntheticConfig,
    regions: list[np.ndarray],
) -> PersonAnnotation | None:
    """Ground truth of a figure on a frame; ``None`` when too little of it is labelled."""
    h_img, w_img = label.shape
    xy = fig.xy[t] - cam
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w_img - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h_img - 1)
    ix = np.clip(np.round(xy).astype(int), 0, (w_img - 1, h_img - 1))
    covered = label[ix[:, 1], ix[:, 0]] > rank
    visible = inside & (~covered | cfg.label_occluded)
    if visible.sum() < cfg.min_visible_joints:
        return None
    centre = tuple(float(v) for v in drawn.box[:2] + drawn.box[2:] / 2)
    if any(cv2.pointPolygonTest(r.astype(np.float32), centre, False) > 0 for r in regions):
        return None  # PoseTrack leaves persons inside ignore regions unlabelled
    keypoints = np.zeros((len(xy), 3))
    keypoints[visible] = np.column_stack([np.round(xy[visible], 2), np.ones(visible.sum())])
    head_box = None
    if kin.head is not None:
        a, b = xy[kin.head[0]], xy[kin.head[1]]
        half, (dx, dy) = np.hypot(*(b - a)) / 2, (b - a) / max(np.hypot(*(b - a)), 1e-6)
        r = kin.rig.head_ratio
        ext = cfg.head_scale * half * np.array([np.hypot(dx, r * dy), np.hypot(dy, r * dx)])
        head_box = np.round(np.concatenate([(a + b) / 2 - ext, (a + b) / 2 + ext]), 2)
    return PersonAnnotation(keypoints, np.round(drawn.box, 2), head_box, fig.track_id)


def _detections(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    drawn: list[_Drawn | None],
    label: np.ndarray,
    path: str,
) -> list[dict]:
    """DCPose-format detector boxes of a frame: jittered, sometimes missed, plus false positives."""
    h_img, w_img = label.shape
    boxes = []
    for rank, d in enumerate(drawn):
        if d is None:
            continue
        y0, y1, x0, x1 = d.roi
        seen = float((label[y0:y1, x0:x1][d.pixels] == rank).mean())
        if seen < 0.25 or rng.random() < cfg.det_miss_prob:
            continue
        x, y, w, h = d.box
        c = np.array([x + w / 2, y + h / 2]) + rng.normal(0, cfg.det_jitter, 2) * (w, h)
        size = np.array([w, h]) * np.exp(rng.normal(0, 1.5 * cfg.det_jitter, 2))
        score = float(np.clip(0.5 + 0.45 * seen + rng.normal(0, 0.05), 0.2, 0.999))
        boxes.append((c - size / 2, size, score))
    for _ in range(int(rng.poisson(cfg.det_false_positives))):
        h = rng.uniform(0.3, 1.0) * cfg.person_height[1]
        size = np.array([h * rng.uniform(0.3, 0.6), h])
        corner = rng.uniform(-0.1, 0.9, 2) * (w_img, h_img)
        boxes.append((corner, size, float(rng.uniform(0.02, 0.6))))
    out = []
    for corner, size, score in boxes:
        lo = np.clip(corner, 0, (w_img - 1, h_img - 1))
        hi = np.clip(corner + size, 0, (w_img - 1, h_img - 1))
        if (hi - lo).min() > 2:
            bbox = [round(float(v), 2) for v in (*lo, *(hi - lo))]
            out.append(
                {"image_name": path, "bbox": bbox, "score": round(score, 4), "category_id": 1}
            )
    return out
