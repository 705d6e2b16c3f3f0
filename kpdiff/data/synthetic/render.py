"""Rasterising: the figures and occluders of a scene drawn onto frames, and a whole video
rendered, written and annotated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kpdiff.data.structures import FrameAnnotation, VideoAnnotation
from kpdiff.data.synthetic.annotate import annotate, fake_detections
from kpdiff.data.synthetic.config import SyntheticConfig
from kpdiff.data.synthetic.kinematics import Kinematics
from kpdiff.data.synthetic.scene import Figure, Occluder, Scene, clip_polygon, make_scene

_OCCLUDER_RANK = 30000


@dataclass
class Drawn:
    """Where a figure landed on a frame: its silhouette box and pixels."""

    box: np.ndarray  # [4] xywh, tight around the silhouette (pixel edges)
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1
    pixels: tuple[np.ndarray, np.ndarray]  # silhouette pixel indices inside the roi


def _render_frame(
    scene: Scene, i: int, kin: Kinematics, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[Figure], list[Drawn | None]]:
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


def render_video(
    out: Path,
    image_dir: str,
    name: str,
    vid_num: int,
    cfg: SyntheticConfig,
    kin: Kinematics,
    rng: np.random.Generator,
    det_rng: np.random.Generator,
) -> tuple[VideoAnnotation, list[dict]]:
    """Render, write and annotate one video; returns its annotation and its detector boxes."""
    scene = make_scene(rng, cfg, kin)
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
            regions = clip_polygon(scene.region - scene.camera[i], *label.shape[::-1])
        annotation = FrameAnnotation(
            path, i, image_id=10_000_000_000 + vid_num * 10_000 + i, is_labeled=labelled,
            ignore_regions=regions,
        )  # fmt: skip
        for rank, (fig, d) in enumerate(zip(order, drawn, strict=True)):
            if labelled and fig.track_id is not None and d is not None:
                person = annotate(fig, i, rank, d, label, scene.camera[i], kin, cfg, regions)
                if person is not None:
                    annotation.persons.append(person)
        video.frames.append(annotation)
        detections += fake_detections(det_rng, cfg, drawn, label, path)
    return video, detections


def _draw_figure(
    frame: np.ndarray,
    label: np.ndarray,
    fig: Figure,
    t: int,
    rank: int,
    cam: np.ndarray,
    kin: Kinematics,
) -> Drawn | None:
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
    return Drawn(np.concatenate([lo - 0.5, hi - lo + 1]), (y0, y1, x0, x1), pixels)


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


def _draw_occluder(frame: np.ndarray, label: np.ndarray, occ: Occluder, t: int) -> None:
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
