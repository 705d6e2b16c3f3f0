"""What the synthetic dataset draws (:class:`SyntheticConfig`) and its build hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from kpdiff.data.schemas import KeypointSchema, get_schema
from kpdiff.data.synthetic.rigs import FigureRig, get_rig
from kpdiff.errors import KpdiffInputError

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output changes; part of the build hash. Version 2 (2026-12):
head boxes scaled by ``SyntheticConfig.head_scale`` (calibrated on real PoseTrack18); frames are
the same as version 1's."""


HEAD_SCALE_POSETRACK18 = 1.34
"""Head-box scale that matches real PoseTrack18: head size (0.6 × the head box diagonal) over the
torso length (mid-shoulder to mid-hip) has median 0.483 on the 13 persons of the real PoseTrack18
sample and 0.360 on unscaled synthetic head boxes (``benchmarks/data_stats.py``); 0.483 / 0.360
≈ 1.34. The head size over the person's height agrees (0.161 real, 0.119 unscaled)."""


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
            "config": canonical(self),
            "schema": canonical(get_schema(self.schema)),
            "rig": canonical(self.rig or get_rig(get_schema(self.schema))),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def canonical(obj: Any) -> Any:
    """A JSON-able, order-stable form of (nested) dataclasses, mappings and sequences."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: canonical(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
