"""Everything of a video drawn before its frames: animated figures and their textures, the
background, occluders, the ignore region, the camera path and its motion blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from kpdiff.data.synthetic.config import SyntheticConfig
from kpdiff.data.synthetic.kinematics import Kinematics, rotation
from kpdiff.data.synthetic.rigs import HUMAN_RIG


# --------------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    """One animated figure over a video, in world (background) pixel coordinates."""

    xy: np.ndarray  # [T, K, 2]
    z: np.ndarray  # [T, K] depth in figure units (larger = further)
    scale: np.ndarray  # [T] pixels per figure unit
    textures: np.ndarray  # [M, S, S, 3] uint8, centred on the root joint
    track_id: int | None  # None: an unannotated figure inside an ignore region


def _make_figure(
    rng: np.random.Generator,
    kin: Kinematics,
    frames: int,
    height: float,
    x_mid: float,
    feet_y: float,
    track_id: int | None,
    travel: bool = True,
) -> Figure:
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
    turn = rotation("y", np.radians(np.array([yaw])))[0]
    pose = kin.animate(swings, frames) @ turn.T  # [T, K, 3]
    heading = (turn @ np.asarray(rig.forward, np.float64))[0]

    growth = rng.uniform(-0.004, 0.004)
    scale = height * (1 + growth * (t - frames / 2))
    root = np.stack(
        [x_mid + speed * height * heading * (t - frames / 2), feet_y - kin.extent[1] * scale], 1
    )
    xy = root[:, None] + scale[:, None, None] * pose[..., :2]
    size = int(2 * 1.3 * kin.extent[2] * scale.max()) + 8
    return Figure(xy, pose[..., 2], scale, _figure_textures(rng, kin, size), track_id)


def _figure_textures(rng: np.random.Generator, kin: Kinematics, size: int) -> np.ndarray:
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
class Occluder:
    """A sprite moving across the frame (opaque: hides joints; translucent: only degrades)."""

    sprite: np.ndarray  # [h, w, 3] uint8
    mask: np.ndarray  # [h, w] bool
    corner: np.ndarray  # [T, 2] top-left corner in frame pixels
    alpha: float


def _make_occluder(
    rng: np.random.Generator, target: np.ndarray, size: float, h_img: int, translucent: float
) -> Occluder:
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
    return Occluder(sprite[:h, :w], mask.astype(bool), corner, float(alpha))


# ------------------------------------------------------------------------------- a video's scene
@dataclass
class Scene:
    """Everything of a video that is drawn before its frames are."""

    background: np.ndarray  # [H + 2 my, W + 2 mx, 3] uint8, the world
    camera: np.ndarray  # [T, 2] int, the frame's top-left corner in the world
    blur: list[np.ndarray | None]  # per frame: a motion-blur kernel or None
    figures: list[Figure]  # annotated, track id = position
    crowd: list[Figure]  # unannotated, inside `region`
    region: np.ndarray | None  # [P, 2] ignore polygon in world pixels
    occluders: list[Occluder]
    noise: np.ndarray  # [H + 16, W + 16, 1] int16 sensor noise, sliced at random per frame
    gains: np.ndarray  # [T] brightness flicker


def make_scene(rng: np.random.Generator, cfg: SyntheticConfig, kin: Kinematics) -> Scene:
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
    return Scene(background, camera, blur, figures, crowd, region, occluders, noise, gains)


def _ignore_region(
    rng: np.random.Generator, kin: Kinematics, cfg: SyntheticConfig, margin: np.ndarray
) -> tuple[list[Figure], np.ndarray]:
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


def clip_polygon(poly: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """The parts ``[P, 2]`` of a polygon inside the image (shapely intersection)."""
    from shapely.geometry import Polygon, box

    clipped = Polygon(poly).buffer(0).intersection(box(0, 0, width - 1, height - 1))
    parts = getattr(clipped, "geoms", [clipped])
    return [
        np.round(np.asarray(p.exterior.coords)[:-1], 2)
        for p in parts
        if isinstance(p, Polygon) and p.area > 20
    ]


def _blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel: linear motion blur of ``length`` pixels at ``angle`` radians."""
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), np.float32)
    c, d = (size - 1) / 2, (length - 1) / 2 * np.array([math.cos(angle), math.sin(angle)])
    p, q = (tuple(round(v * 16) for v in c + s * d) for s in (-1, 1))
    cv2.line(kernel, p, q, 1.0, 1, cv2.LINE_AA, 4)
    return kernel / kernel.sum()
