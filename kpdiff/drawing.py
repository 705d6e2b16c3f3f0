"""Draw poses on an image: the skeleton, and each joint's circle sized by its ensemble spread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpdiff.data.schemas import KeypointSchema
from kpdiff.errors import KpdiffInputError

__all__ = ["draw_poses"]

# BGR, one per person (track id modulo the list).
COLOURS = [(255, 128, 0), (0, 200, 255), (60, 220, 60), (230, 60, 230), (60, 60, 255)]


def draw_poses(
    image: np.ndarray,
    poses: np.ndarray,
    schema: KeypointSchema | Sequence[tuple[int, int]],
    *,
    spread: np.ndarray | None = None,
    track_ids: Sequence[int] | None = None,
    min_score: float = 0.2,
    copy: bool = True,
) -> np.ndarray:
    """Draw ``poses`` on a BGR (OpenCV) image.

    Args:
        image: ``[H, W, 3]`` uint8, BGR.
        poses: ``[P, K, 3]`` (x, y, score) in image pixels, or ``[K, 3]`` for one person.
        schema: the keypoint schema (its ``skeleton`` is drawn), or the edges themselves as
            ``(joint, joint)`` index pairs.
        spread: ``[P, K]`` ensemble spread in image pixels: a joint's circle has radius
            ``2 + spread`` (clipped to 30), so uncertain joints look bigger. Default ``None``
            (radius 2).
        track_ids: one integer per person; it picks the person's colour, so a person keeps
            its colour from frame to frame. Default: the person's index.
        min_score: joints scoring below this are not drawn, nor their edges. Default ``0.2``.
        copy: draw on a copy (``True``, default) or on ``image`` itself.

    Returns:
        The image with the poses drawn, ``[H, W, 3]`` uint8.

    Raises:
        KpdiffInputError: wrong shapes, or an edge naming a joint the poses do not have.
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__)
        raise KpdiffInputError(f"image: expected an [H, W, 3] BGR array, got {got}")
    poses = np.asarray(poses, dtype=np.float64)
    poses = poses[None] if poses.ndim == 2 else poses
    if poses.ndim != 3 or poses.shape[2] != 3:
        raise KpdiffInputError(f"poses: expected [P, K, 3] (x, y, score), got {list(poses.shape)}")
    p, k = poses.shape[:2]
    spread = np.zeros((p, k)) if spread is None else np.asarray(spread, dtype=np.float64)
    spread = spread[None] if spread.ndim == 1 else spread
    if spread.shape != (p, k):
        raise KpdiffInputError(f"spread: expected [{p}, {k}] (as poses), got {list(spread.shape)}")
    ids = list(range(p)) if track_ids is None else [int(i) for i in track_ids]
    if len(ids) != p:
        raise KpdiffInputError(f"track_ids: expected {p} ids (one per pose), got {len(ids)}")
    edges = schema.skeleton if isinstance(schema, KeypointSchema) else list(schema)
    if any(not (0 <= a < k and 0 <= b < k) for a, b in edges):
        raise KpdiffInputError(f"schema: its skeleton names joints outside 0…{k - 1}")

    out = image.copy() if copy else image
    thickness = max(1, out.shape[1] // 400)
    for pose, size, track in zip(poses, spread, ids, strict=True):
        colour = COLOURS[track % len(COLOURS)]
        ok = np.isfinite(pose).all(axis=1) & (pose[:, 2] >= min_score)
        for a, b in edges:
            if ok[a] and ok[b]:
                pa, pb = (tuple(int(np.rint(v)) for v in pose[j, :2]) for j in (a, b))
                cv2.line(out, pa, pb, colour, thickness + 1, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            centre = tuple(int(np.rint(v)) for v in pose[j, :2])
            radius = int(np.clip(2 + np.nan_to_num(size[j]), 2, 30))
            cv2.circle(out, centre, radius, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
