"""The one in-memory form of keypoint annotations, whatever file format they came from.

Readers of PoseTrack17/18/21, COCO-style detections and the synthetic dataset all produce these
objects; the clip pipeline, the evaluation and the writers consume them.

Conventions: image coordinates in pixels, origin at the top-left pixel's centre; boxes are
``xywh`` (top-left corner, width, height); head boxes are ``xyxy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrameAnnotation", "PersonAnnotation", "VideoAnnotation"]


@dataclass
class PersonAnnotation:
    """One person on one frame (ground truth or prediction).

    Attributes:
        keypoints: ``[K, 3]`` float array of ``(x, y, v)``. For ground truth ``v > 0`` marks an
            annotated joint and ``v == 0`` an absent one (x = y = 0 then). For predictions the
            third value is the joint's score.
        box: ``[4]`` person box ``xywh``, or ``None``.
        head_box: ``[4]`` head box ``xyxy`` (PoseTrack ``bbox_head``), or ``None``.
        track_id: the person's track id within its video, or ``None``.
        score: detection/box score (predictions and detector boxes), or ``None``.
        present: ``[K]`` bool, which joints the file lists, or ``None`` (default): every joint
            whose ``(x, y, v)`` is not ``(0, 0, 0)``. Readers set it where the file says more
            than the numbers do: a predicted joint at the origin with score 0, a PoseTrack17
            point at the origin with visibility 0.
    """

    keypoints: np.ndarray
    box: np.ndarray | None = None
    head_box: np.ndarray | None = None
    track_id: int | None = None
    score: float | None = None
    present: np.ndarray | None = None

    def joints_present(self) -> np.ndarray:
        """``[K]`` bool: :attr:`present`, or the joints whose ``(x, y, v)`` is not all zero."""
        if self.present is not None:
            return np.asarray(self.present, bool)
        return np.asarray(self.keypoints, np.float64).any(axis=-1)


@dataclass
class FrameAnnotation:
    """One frame of a video.

    Attributes:
        image_path: path of the frame image, relative to the dataset root (as in the JSON files).
        frame_index: 0-based position of the frame in its video.
        image_id: the dataset's image id (PoseTrack18/21), or ``None``.
        is_labeled: whether the frame carries ground truth (unlabelled frames are skipped by the
            evaluation and used only as temporal context).
        persons: the persons on the frame.
        ignore_regions: polygons ``[P, 2]`` (x, y) inside which joints are not evaluated.
    """

    image_path: str
    frame_index: int
    image_id: int | None = None
    is_labeled: bool = True
    persons: list[PersonAnnotation] = field(default_factory=list)
    ignore_regions: list[np.ndarray] = field(default_factory=list)


@dataclass
class VideoAnnotation:
    """One video: its name (the annotation file's stem) and its frames in order."""

    name: str
    frames: list[FrameAnnotation] = field(default_factory=list)
