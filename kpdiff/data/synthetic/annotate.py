"""Ground truth of a drawn figure (PoseTrack18 person) and the fake detector's boxes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from kpdiff.data.structures import PersonAnnotation
from kpdiff.data.synthetic.config import SyntheticConfig
from kpdiff.data.synthetic.kinematics import Kinematics
from kpdiff.data.synthetic.scene import Figure

if TYPE_CHECKING:  # render imports this module
    from kpdiff.data.synthetic.render import Drawn


def annotate(
    fig: Figure,
    t: int,
    rank: int,
    drawn: Drawn,
    label: np.ndarray,
    cam: np.ndarray,
    kin: Kinematics,
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
    # The head box (the metric's reference size): the box of the ellipse spanning the rig's two
    # head joints (width head_ratio × length), scaled about its centre by head_scale.
    a, b = xy[kin.head[0]], xy[kin.head[1]]
    half, (dx, dy) = np.hypot(*(b - a)) / 2, (b - a) / max(np.hypot(*(b - a)), 1e-6)
    r = kin.rig.head_ratio
    ext = cfg.head_scale * half * np.array([np.hypot(dx, r * dy), np.hypot(dy, r * dx)])
    head_box = np.round(np.concatenate([(a + b) / 2 - ext, (a + b) / 2 + ext]), 2)
    return PersonAnnotation(keypoints, np.round(drawn.box, 2), head_box, fig.track_id)


def fake_detections(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    drawn: list[Drawn | None],
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
