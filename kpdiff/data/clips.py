"""The top-down clip pipeline: one person box on a key frame → a ``2δ+1``-frame crop and targets.

For every person box on a key frame the item holds the clip of the key frame and its ``δ``
neighbours on each side, all warped with ONE affine (box ×1.25 at fixed aspect, HRNet/DCPose
centre/scale with ``pixel_std = 200``, plus the clip's augmentation), ImageNet-normalised, and
the key frame's heatmap targets from a :class:`~kpdiff.codecs.GaussianHeatmapCodec`.

Coordinates use kpdiff's pixel-centre convention throughout (:mod:`kpdiff.data.transforms`), so
``crop_to_image(codec.decode(codec.encode(affine · p)))`` returns ``p``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from kpdiff.codecs import GaussianHeatmapCodec
from kpdiff.data.detections import DEFAULT_MIN_SCORE, boxes_for_frame, read_detections
from kpdiff.data.schemas import KeypointSchema, get_schema
from kpdiff.data.structures import PersonAnnotation, VideoAnnotation
from kpdiff.data.transforms import apply_affine, box_to_center_scale, crop_affine, invert_affine
from kpdiff.errors import KpdiffInputError
from kpdiff.strides import HEATMAP_STRIDE

__all__ = [
    "IMAGE_SUFFIXES",
    "AugmentConfig",
    "ClipConfig",
    "ClipSample",
    "TopDownClipDataset",
    "clip_indices",
    "crop_to_image",
    "read_frame",
]

EdgePolicy = Literal["clamp", "repeat"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
"""File suffixes read as frames (compared in lower case)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_UPPER_BODY = {"posetrack": tuple(range(11)), "coco": tuple(range(11))}


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut (no randomness here; see :class:`AugmentConfig`).

    Args:
        delta: neighbours on each side of the key frame, the clip has ``T = 2δ + 1`` frames.
            Default ``2``.
        input_size: ``(H, W)`` of the crop. Default ``(256, 192)``.
        edge: neighbours beyond a video's ends: ``"clamp"`` the index to the video (mmpose) or
            ``"repeat"`` the key frame (FAMI-Pose). Default ``"clamp"``.
        padding: box enlargement at fixed aspect. Default ``1.25``.
        pixel_std: unit of the ``scale`` metadata. Default ``200``.
        min_box_score: detector boxes scoring below are dropped (DCPose). Default ``0.2``.
        cache_size: decoded frames kept in the LRU cache (per worker). Default ``32``.
        mean: per-channel RGB mean of values in ``[0, 1]``. Default ImageNet's.
        std: per-channel RGB standard deviation. Default ImageNet's.
    """

    delta: int = 2
    input_size: tuple[int, int] = (256, 192)
    edge: EdgePolicy = "clamp"
    padding: float = 1.25
    pixel_std: float = 200.0
    min_box_score: float = DEFAULT_MIN_SCORE
    cache_size: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not isinstance(self.delta, int) or self.delta < 0:
            raise KpdiffInputError(f"delta: expected an int >= 0, got {self.delta!r}")
        if self.edge not in ("clamp", "repeat"):
            raise KpdiffInputError(f"edge: expected 'clamp' or 'repeat', got {self.edge!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise KpdiffInputError(f"input_size: expected (H, W) >= 1, got {self.input_size}")
        if self.padding <= 0 or self.pixel_std <= 0 or self.cache_size < 0:
            raise KpdiffInputError(
                "padding and pixel_std must be > 0 and cache_size >= 0, got "
                f"{self.padding}, {self.pixel_std}, {self.cache_size}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, drawn once per item and applied identically to every clip frame.

    Args:
        rotation: maximum rotation in degrees, drawn uniformly in ``±rotation``. Default ``45``.
        rotation_prob: probability of rotating at all (HRNet). Default ``0.6``.
        scale_range: the crop region is multiplied by a factor drawn uniformly in this range.
            Default ``(0.65, 1.35)``.
        flip_prob: probability of a left–right flip (joints swapped by the schema's flip
            pairs). Default ``0.5``.
        half_body_prob: probability of re-centring the box on the upper or lower body (HRNet).
            Default ``0.3``.
        half_body_min_joints: half-body is tried only with more visible joints than this.
            Default ``8``.
        upper_body: joint ids of the upper body. ``None``: joints 0–10 for ``posetrack`` and
            ``coco`` (head, arms), for other schemas the visible joints above their median height.
    """

    rotation: float = 45.0
    rotation_prob: float = 0.6
    scale_range: tuple[float, float] = (0.65, 1.35)
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    upper_body: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ClipSample:
    """One item: a box on a key frame of a video.

    Attributes:
        video: the video's name.
        frame_paths: paths of every frame of the video, in order (shared between samples).
        key: position of the key frame in ``frame_paths``.
        box: ``[4]`` ``xywh`` in image pixels.
        score: box score (1 for ground truth). Default ``1.0``.
        track_id: the person's track id, ``-1`` when unknown. Default ``-1``.
        keypoints: ``[K, 3]`` ground truth ``(x, y, v)`` or ``None`` (inference).
        frame_index: the key frame's index in the video; ``None`` means ``key``.
    """

    video: str
    frame_paths: tuple[str, ...]
    key: int
    box: np.ndarray
    score: float = 1.0
    track_id: int = -1
    keypoints: np.ndarray | None = field(default=None, repr=False)
    frame_index: int | None = None


def clip_indices(key: int, num_frames: int, delta: int, edge: EdgePolicy = "clamp") -> list[int]:
    """Frame positions of the clip around ``key``: ``2δ+1`` ints in ``[0, num_frames)``.

    Args:
        key: position of the key frame.
        num_frames: frames in the video.
        delta: neighbours on each side.
        edge: ``"clamp"`` out-of-range positions to the nearest end, or ``"repeat"`` the key.
    """
    if num_frames < 1 or not 0 <= key < num_frames:
        raise KpdiffInputError(f"key: expected 0 <= key < {num_frames}, got {key}")
    if delta < 0:
        raise KpdiffInputError(f"delta: expected >= 0, got {delta}")
    out = []
    for i in range(key - delta, key + delta + 1):
        inside = 0 <= i < num_frames
        out.append(i if inside else (min(max(i, 0), num_frames - 1) if edge == "clamp" else key))
    return out


def read_frame(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into a BGR ``uint8`` array ``[H, W, 3]``.

    A JPEG cut short (no end-of-image marker near its end) is refused rather than decoded
    half grey, as libjpeg does with only a warning.

    Raises:
        KpdiffInputError: naming the file, when it is missing, empty, truncated or not an image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise KpdiffInputError(f"image file {path} does not exist")
    data = np.fromfile(path, np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:].tobytes():
        # In entropy-coded JPEG data 0xFF is always followed by 0x00 or a restart marker, so
        # 0xFFD9 occurs only as the end-of-image marker: without it the file was cut short.
        raise KpdiffInputError(f"image file {path} is a truncated JPEG (no end-of-image marker)")
    frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
    if frame is None:
        raise KpdiffInputError(f"image file {path} could not be decoded as an image")
    return frame


class _FrameCache:
    """LRU cache of decoded BGR frames keyed by path."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, path: str) -> np.ndarray:
        frame = self._frames.get(path)
        if frame is not None:
            self._frames.move_to_end(path)
            return frame
        frame = read_frame(path)
        if self.size:
            self._frames[path] = frame
            if len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frame


class TopDownClipDataset(Dataset):
    """Top-down clips around person boxes, a ``torch.utils.data.Dataset`` of dicts.

    Build it with :meth:`from_videos` (ground-truth or detector boxes on annotated videos) or
    :meth:`from_boxes` (boxes on one frame of any video). Each item holds:

    - ``clip [T, 3, H, W]`` float32, normalised RGB; ``T = 2δ + 1``, key frame in the middle;
    - ``heatmaps [K, h, w]``, ``weights [K]``: the codec's targets on the key frame (zeros
      without ground truth); ``keypoints [K, 3]``: ``(x, y, v)`` in crop pixels;
    - metadata: ``video``, ``image_path`` (str), ``frame_index``, ``track_id`` (int),
      ``score`` (float), ``box [4]`` xywh, ``center [2]``, ``scale [2]``, ``rotation``,
      ``flipped``, ``affine [2, 3]`` (image → crop), ``inverse_affine [2, 3]`` (crop → image) and
      ``joint_order [K]`` (crop channel ``k`` is image joint ``joint_order[k]``; not the identity
      only after a flip). :func:`crop_to_image` uses the last two.

    Args:
        samples: the items.
        schema: the keypoint schema (``K`` and flip pairs) or its name. Default ``POSETRACK``.
        config: clip geometry. Default ``ClipConfig()``.
        augment: training augmentation, or ``None`` (evaluation). Default ``None``.
        codec: target codec; default ``GaussianHeatmapCodec`` with stride 4 for ``input_size``.
        frames: where frames come from: any object whose ``get(path)`` returns the BGR
            ``uint8`` frame ``[H, W, 3]`` of a sample's frame path (e.g.
            :class:`~kpdiff.video.StreamedFrames`, a video decoded without image files).
            Default ``None``: the image files, decoded through an LRU cache of
            ``config.cache_size`` frames.
    """

    def __init__(
        self,
        samples: Sequence[ClipSample],
        *,
        schema: KeypointSchema | str | None = None,
        config: ClipConfig | None = None,
        augment: AugmentConfig | None = None,
        codec: GaussianHeatmapCodec | None = None,
        frames: Any | None = None,
    ) -> None:
        self.samples = list(samples)
        self.schema = get_schema(schema if schema is not None else "posetrack")
        self.num_keypoints = self.schema.num_keypoints
        self.config = config or ClipConfig()
        self.augment = augment
        h, w = self.config.input_size
        self.codec = codec or GaussianHeatmapCodec((h // HEATMAP_STRIDE, w // HEATMAP_STRIDE))
        if tuple(self.codec.input_size) != (h, w):
            raise KpdiffInputError(
                f"codec: its input size {self.codec.input_size} differs from input_size {(h, w)}"
            )
        self._cache = frames if frames is not None else _FrameCache(self.config.cache_size)
        # uint8 value → normalised value, per RGB channel: one table lookup per pixel
        mean, std = np.array(self.config.mean) * 255, np.array(self.config.std) * 255
        self._lut = ((np.arange(256)[:, None] - mean) / std).astype(np.float32).T.copy()  # [3, 256]

    @classmethod
    def from_videos(
        cls,
        videos: Sequence[VideoAnnotation],
        root: str | Path,
        *,
        detections: Mapping[str | int, np.ndarray] | str | Path | None = None,
        key_frames: Literal["labelled", "all"] = "labelled",
        **kwargs: Any,
    ) -> TopDownClipDataset:
        """Items for the persons of annotated videos.

        Args:
            videos: the videos; frame ``image_path`` s are relative to ``root``.
            root: the dataset root.
            detections: ``None`` → the ground-truth persons of labelled frames (training);
                else detector boxes: a DCPose/COCO detection file or the result of
                :func:`kpdiff.data.detections.read_detections`. Boxes scoring below
                ``config.min_box_score`` are dropped.
            key_frames: with detections, boxes of ``"labelled"`` frames only or of ``"all"``
                frames. Default ``"labelled"``.
            **kwargs: passed to the constructor (``schema``, ``config``, ``augment``, ``codec``).
        """
        dataset = cls([], **kwargs)
        min_score = dataset.config.min_box_score
        if isinstance(detections, str | Path):
            detections = read_detections(detections, min_score=min_score)
        root = Path(root)
        for video in videos:
            if not video.frames:
                raise KpdiffInputError(f"videos: video {video.name!r} has no frames")
            paths = tuple(str(root / f.image_path) for f in video.frames)
            for pos, frame in enumerate(video.frames):
                if detections is None:
                    for person in frame.persons if frame.is_labeled else ():
                        sample = _gt_sample(video.name, paths, pos, frame.frame_index, person)
                        if sample is not None:
                            dataset.samples.append(sample)
                elif frame.is_labeled or key_frames == "all":
                    for *box, score in boxes_for_frame(detections, frame):
                        if score >= min_score and box[2] > 1 and box[3] > 1:
                            dataset.samples.append(
                                ClipSample(
                                    video.name, paths, pos, np.asarray(box), float(score),
                                    frame_index=frame.frame_index,
                                )
                            )  # fmt: skip
        return dataset

    @classmethod
    def from_boxes(
        cls,
        frames: Sequence[str | Path],
        boxes: np.ndarray | Sequence[Sequence[float]],
        *,
        key: int,
        scores: Sequence[float] | None = None,
        video: str = "video",
        **kwargs: Any,
    ) -> TopDownClipDataset:
        """Items for boxes on one frame of any video (inference).

        Args:
            frames: paths of the video's frames in order.
            boxes: ``[N, 4]`` ``xywh`` boxes on frame ``key``.
            key: position of the frame the boxes belong to.
            scores: ``[N]`` box scores; default all ``1``. No threshold is applied.
            video: name stored in the items' metadata. Default ``"video"``.
            **kwargs: passed to the constructor.
        """
        if len(frames) == 0:
            raise KpdiffInputError("frames: expected at least one frame path, got none")
        if not 0 <= key < len(frames):
            raise KpdiffInputError(f"key: expected 0 <= key < {len(frames)}, got {key}")
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = [1.0] * len(arr) if scores is None else list(scores)
        if len(scores) != len(arr):
            raise KpdiffInputError(f"scores: expected {len(arr)} values, got {len(scores)}")
        paths = tuple(str(p) for p in frames)
        samples = [
            ClipSample(video, paths, key, b, float(s)) for b, s in zip(arr, scores, strict=True)
        ]
        return cls(samples, **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        cfg, k = self.config, self.num_keypoints
        h, w = cfg.input_size
        kpts = np.zeros((k, 3)) if s.keypoints is None else np.asarray(s.keypoints, np.float64)
        if kpts.shape != (k, 3):
            raise KpdiffInputError(f"keypoints of {s.video!r}: expected [{k}, 3], got {kpts.shape}")
        center, scale = box_to_center_scale(
            s.box, w / h, padding=cfg.padding, pixel_std=cfg.pixel_std
        )
        rotation, flip = 0.0, False
        if self.augment is not None:
            center, scale, rotation, flip = self._draw_augmentation(kpts, center, scale)
        affine = crop_affine(center, scale, (h, w), rotation=rotation, flip=flip)
        order = self.schema.flip_permutation if flip else np.arange(k)

        idx = clip_indices(s.key, len(s.frame_paths), cfg.delta, cfg.edge)
        crops = np.stack([self._warp(s.frame_paths[i], affine) for i in idx])  # [T, H, W, 3] BGR
        clip = np.empty((len(idx), 3, h, w), np.float32)
        for c in range(3):
            np.take(self._lut[c], crops[..., 2 - c], out=clip[:, c])

        crop_kpts = np.concatenate([apply_affine(kpts[:, :2], affine), kpts[:, 2:]], 1)[order]
        heatmaps, weights = self.codec.encode(
            torch.from_numpy(crop_kpts[None, :, :2]).float(),
            torch.from_numpy(crop_kpts[None, :, 2]).float(),
        )
        return {
            "clip": torch.from_numpy(clip),
            "heatmaps": heatmaps[0],
            "weights": weights[0],
            "keypoints": torch.from_numpy(crop_kpts).float(),
            "video": s.video,
            "image_path": s.frame_paths[s.key],
            "frame_index": s.key if s.frame_index is None else s.frame_index,
            "track_id": s.track_id,
            "score": float(s.score),
            "box": np.asarray(s.box, np.float32),
            "center": center.astype(np.float32),
            "scale": scale.astype(np.float32),
            "rotation": float(rotation),
            "flipped": flip,
            "affine": affine,
            "inverse_affine": invert_affine(affine),
            "joint_order": order,
        }

    def _warp(self, path: str, affine: np.ndarray) -> np.ndarray:
        h, w = self.config.input_size
        frame = self._cache.get(path)
        return cv2.warpAffine(frame, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)

    def _draw_augmentation(
        self, kpts: np.ndarray, center: np.ndarray, scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """One draw of (centre, scale, rotation, flip) for the whole clip."""
        aug, cfg = self.augment, self.config
        assert aug is not None
        # Torch's generator: seeded by torch.manual_seed and per DataLoader worker and epoch.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        visible = np.flatnonzero(kpts[:, 2] > 0)
        if len(visible) > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
            half = self._half_body(kpts, visible, rng)
            if half is not None:
                h, w = cfg.input_size
                center, scale = box_to_center_scale(
                    half, w / h, padding=1.5, pixel_std=cfg.pixel_std
                )
        scale = scale * rng.uniform(*aug.scale_range)
        rotation = (
            rng.uniform(-aug.rotation, aug.rotation) if rng.random() < aug.rotation_prob else 0
        )
        flip = bool(rng.random() < aug.flip_prob)
        return center, scale, float(rotation), flip

    def _half_body(
        self, kpts: np.ndarray, visible: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """The ``xywh`` box of the visible upper- or lower-body joints (HRNet), or ``None``."""
        upper = self.augment.upper_body if self.augment else None
        upper = upper if upper is not None else _UPPER_BODY.get(self.schema.name.lower())
        if upper is None:
            ys = kpts[visible, 1]
            upper_set = visible[ys <= np.median(ys)]
        else:
            upper_set = np.intersect1d(visible, np.asarray(upper, int))
        lower_set = np.setdiff1d(visible, upper_set)
        chosen = upper_set if (rng.random() < 0.5 and len(upper_set) > 2) else lower_set
        chosen = chosen if len(chosen) >= 2 else upper_set
        if len(chosen) < 2:
            return None
        lo, hi = kpts[chosen, :2].min(0), kpts[chosen, :2].max(0)
        size = np.maximum(hi - lo, 1.0)
        return np.array([lo[0], lo[1], size[0], size[1]])


def crop_to_image(
    keypoints: torch.Tensor | np.ndarray, meta: Mapping[str, Any]
) -> torch.Tensor | np.ndarray:
    """Map crop-pixel keypoints back to image pixels (and undo a flip's joint swap).

    Args:
        keypoints: ``[B, K, C]`` with ``C >= 2`` (``x, y`` first; further columns such as
            scores travel with their joint), in crop pixels; ``[K, C]`` for a single item.
        meta: an item or a collated batch: ``inverse_affine [B, 2, 3]`` (or ``[2, 3]``) and,
            optionally, ``joint_order [B, K]``.

    Returns:
        The same shape and type as ``keypoints``, in image pixels and image joint order.
    """
    is_numpy = isinstance(keypoints, np.ndarray)
    kp = torch.as_tensor(keypoints)
    single = kp.dim() == 2
    kp = kp[None] if single else kp
    if kp.dim() != 3 or kp.shape[-1] < 2:
        raise KpdiffInputError(f"keypoints: expected [B, K, C>=2], got {list(kp.shape)}")
    inv = _as_tensor(meta["inverse_affine"]).to(kp.device, torch.float64).reshape(-1, 2, 3)
    if inv.shape[0] != kp.shape[0]:
        raise KpdiffInputError(
            f"meta['inverse_affine']: {inv.shape[0]} matrices for {kp.shape[0]} keypoint sets"
        )
    xy = kp[..., :2].double() @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    out = torch.cat([xy.to(kp.dtype), kp[..., 2:]], dim=-1)
    if meta.get("joint_order") is not None:
        order = _as_tensor(meta["joint_order"]).to(kp.device).long()
        order = order.reshape(kp.shape[0], -1, 1).expand_as(out)
        out = torch.empty_like(out).scatter_(1, order, out)
    out = out[0] if single else out
    return out.numpy() if is_numpy else out


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _gt_sample(
    video: str, paths: tuple[str, ...], pos: int, frame_index: int, person: PersonAnnotation
) -> ClipSample | None:
    """The sample of a ground-truth person; ``None`` without visible joints or a usable box."""
    kpts = np.asarray(person.keypoints, np.float64)
    vis = kpts[:, 2] > 0
    if not vis.any():
        return None
    box = person.box
    if box is None:  # the visible joints' extent
        lo, hi = kpts[vis, :2].min(0), kpts[vis, :2].max(0)
        box = np.concatenate([lo, hi - lo])
    if not (box[2] > 1 and box[3] > 1):
        return None
    track = -1 if person.track_id is None else int(person.track_id)
    return ClipSample(video, paths, pos, np.asarray(box, np.float64), 1.0, track, kpts, frame_index)
