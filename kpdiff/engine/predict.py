"""Pose estimation on any video with given person boxes, and what to write from it.

kpdiff bundles no person detector (weights cannot be downloaded here, and any detector's boxes
will do): boxes come from a JSON file in the DCPose layout (``image_name``, ``bbox`` xywh,
``score``) keyed by ``"<video folder>/<frame file>"``, or the COCO detection layout keyed by
``image_id`` = the frame's index in the video.

    predictor = VideoPredictor(DiffPose.from_pretrained("runs/demo/best"))
    result = predictor(frames_or_video, "boxes.json")
    result.write_posetrack18("out/pred.json"); result.write_coco("out/coco.json")
    render_video(result, "out/overlay.gif")
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from kpdiff.data.clips import ClipConfig, TopDownClipDataset, read_frame
from kpdiff.data.detections import DEFAULT_MIN_SCORE, image_key, read_detections
from kpdiff.data.posetrack import write_posetrack18_predictions
from kpdiff.data.schemas import KeypointSchema, get_schema
from kpdiff.data.structures import FrameAnnotation, VideoAnnotation
from kpdiff.drawing import draw_poses
from kpdiff.engine.evaluate import _rows, predictions_to_videos
from kpdiff.errors import KpdiffInputError
from kpdiff.io import atomic_path, write_json_atomic
from kpdiff.tracking import IoUTracker

__all__ = ["VideoPrediction", "VideoPredictor", "list_frames", "render_video"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")


def list_frames(source: str | Path, workdir: str | Path | None = None) -> list[Path]:
    """The frame files of a video: a folder of images (sorted by name) or a video file.

    A video file is decoded with OpenCV into ``workdir/<video stem>/000000.jpg …`` (a temporary
    folder when ``workdir`` is ``None``).

    Raises:
        KpdiffInputError: the path is missing, holds no image, or cannot be decoded.
    """
    source = Path(source)
    if not source.exists():
        raise KpdiffInputError(f"video: {source} does not exist")
    if source.is_dir():
        frames = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise KpdiffInputError(f"video: {source} holds no {'/'.join(IMAGE_SUFFIXES)} frames")
        return frames
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        # FFmpeg guesses formats: it reads a text file as ANSI art and any image as a video
        raise KpdiffInputError(
            f"video: {source} is neither a folder of frames nor a video file (expected one of "
            f"{', '.join(VIDEO_SUFFIXES)})"
        )
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise KpdiffInputError(f"video: {source} is neither a folder of frames nor a video file")
    out = Path(workdir or tempfile.mkdtemp(prefix="kpdiff-frames-")) / source.stem
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        path = out / f"{len(frames):06d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        frames.append(path)
    cap.release()
    if not frames:
        raise KpdiffInputError(f"video: {source} has no decodable frames")
    return frames


@dataclass
class VideoPrediction:
    """Poses on every frame of one video.

    Attributes:
        name: the video's name; ``frames``: its frame files in order.
        persons: one dict per predicted person: ``frame_index``, ``box [4]`` xywh,
            ``box_score``, ``keypoints [K, 3]`` (x, y, score = heatmap max × box score),
            ``spread [K]`` (ensemble disagreement in image pixels, an uncertainty) and
            ``track_id`` (the same person across frames, from the tracker).
        schema: the keypoint schema.
    """

    name: str
    frames: list[Path]
    persons: list[dict[str, Any]]
    schema: KeypointSchema

    def video(self) -> VideoAnnotation:
        """The predictions as a :class:`VideoAnnotation` with every frame present."""
        gt_like = VideoAnnotation(
            self.name,
            [
                FrameAnnotation(image_path=str(p), frame_index=i, image_id=i)
                for i, p in enumerate(self.frames)
            ],
        )
        return predictions_to_videos(self.persons, [gt_like])[0]

    def write_posetrack18(self, path: str | Path) -> Path:
        """Write a PoseTrack18 prediction file (poseval reads it), atomically."""
        return write_posetrack18_predictions(self.video(), path, schema=self.schema)

    def write_coco(self, path: str | Path) -> Path:
        """Write COCO keypoint results (+ ``keypoint_spread``), atomically."""
        records = []
        for p in self.persons:
            kp = np.asarray(p["keypoints"], np.float64)
            records.append(
                {
                    "image_id": int(p["frame_index"]),
                    "track_id": int(p["track_id"]),
                    "file_name": self.frames[p["frame_index"]].name,
                    "category_id": 1,
                    "bbox": [round(float(v), 2) for v in p["box"]],
                    "keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
                    "score": round(float(kp[:, 2].mean()), 5),
                    "keypoint_spread": [round(float(v), 3) for v in p["spread"]],
                }
            )
        return write_json_atomic(records, path)


class VideoPredictor:
    """Run a DiffPose model on a video given person boxes.

    Args:
        model: a ``DiffPose`` (e.g. ``DiffPose.from_pretrained(dir)``).
        num_samples: N. Default ``10``. steps: DDIM steps. Default ``4``.
        batch_size: clips per forward. Default ``32``.
        seed: sampling seed. Default ``0``.
        schema: keypoint schema (names, skeleton); another than the model's is refused.
            Default ``None``: the model's (``"posetrack"`` when it records none).
        min_box_score: boxes scoring below are ignored. Default ``0.2``.
        edge: neighbour frames beyond the video's ends: ``"clamp"`` or ``"repeat"``.
        tracker: links people across frames into ``track_id``s; a fresh copy of it runs on each
            video. Default: :class:`~kpdiff.tracking.IoUTracker` ``()``.
    """

    def __init__(
        self,
        model: Any,
        *,
        num_samples: int = 10,
        steps: int = 4,
        batch_size: int = 32,
        seed: int = 0,
        schema: KeypointSchema | str | None = None,
        min_box_score: float = DEFAULT_MIN_SCORE,
        edge: str = "clamp",
        tracker: IoUTracker | None = None,
    ) -> None:
        if (
            isinstance(min_box_score, bool)
            or not isinstance(min_box_score, int | float)
            or (not math.isfinite(min_box_score))
        ):
            raise KpdiffInputError(
                f"min_box_score: expected a finite number, got {min_box_score!r}"
            )
        self._tracker = tracker or IoUTracker()
        self.model = model.eval()
        self.num_samples, self.steps = num_samples, steps
        self.batch_size, self.seed = batch_size, seed
        self.schema = get_schema(schema or model.config.schema or "posetrack")
        model.config.check_schema(self.schema)
        self.clip_config = ClipConfig(
            delta=model.config.delta,
            input_size=tuple(model.config.input_size),
            edge=edge,  # type: ignore[arg-type]
            min_box_score=min_box_score,
        )

    @torch.no_grad()
    def __call__(
        self,
        video: str | Path | Sequence[str | Path],
        boxes: str | Path | Mapping[str | int, np.ndarray],
        *,
        workdir: str | Path | None = None,
    ) -> VideoPrediction:
        """Predict every box of every frame.

        Args:
            video: a video file, a folder of frames, or the list of frame paths.
            boxes: a detection JSON file (DCPose or COCO layout) or what
                :func:`kpdiff.data.detections.read_detections` returns.
            workdir: where a video file's frames are decoded. Default: a temporary folder.
        """
        if isinstance(video, str | Path):
            frames = list_frames(video, workdir)
            name = Path(video).name if Path(video).is_dir() else Path(video).stem
        else:
            frames = [Path(p) for p in video]
            if not frames:
                raise KpdiffInputError("video: expected at least one frame, got none")
            name = frames[0].parent.name or "video"
        source = "boxes"
        if isinstance(boxes, str | Path):
            if not Path(boxes).is_file():
                raise KpdiffInputError(f"boxes: {boxes} does not exist")
            source = f"boxes: {boxes}"
            boxes = read_detections(boxes, min_score=-math.inf)  # counted and filtered below
        boxes = self._usable_boxes(dict(boxes), frames, name, source)
        annotation = VideoAnnotation(
            name,
            [
                FrameAnnotation(image_path=str(p.resolve()), frame_index=i, image_id=i)
                for i, p in enumerate(frames)
            ],
        )
        dataset = TopDownClipDataset.from_videos(
            [annotation], "/", detections=boxes, key_frames="all",
            schema=self.schema, config=self.clip_config,
        )  # fmt: skip
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        persons: list[dict[str, Any]] = []
        for batch in DataLoader(dataset, batch_size=self.batch_size, shuffle=False):
            result = self.model.predict(
                batch["clip"].to(device),
                num_samples=self.num_samples,
                steps=self.steps,
                generator=generator,
            )
            persons.extend(_rows(batch, result))
        for p in persons:
            p.pop("gt", None)
        _track(persons, len(frames), dataclasses.replace(self._tracker))  # fresh state
        return VideoPrediction(name=name, frames=frames, persons=persons, schema=self.schema)

    def _usable_boxes(
        self,
        boxes: dict[str | int, np.ndarray],
        frames: list[Path],
        name: str,
        source: str,
    ) -> dict[str | int, np.ndarray]:
        """The boxes of ``frames`` that the clips use; say why when none is left, and warn
        about boxes of images that are not frames of this video."""
        keys = {image_key(str(p.resolve())): i for i, p in enumerate(frames)}
        matched = {}
        for k, v in boxes.items():
            i = k if isinstance(k, int) and not isinstance(k, bool) else keys.get(str(k))
            if i is not None and 0 <= i < len(frames):
                matched[i] = np.asarray(v, np.float64).reshape(-1, 5)
        if boxes and not matched:
            shown = ", ".join(repr(k) for k in list(boxes)[:3])
            raise KpdiffInputError(
                f"{source}: none of its boxes belongs to a frame of {name} (keys {shown}, ...); "
                f"DCPose image_name must end in '<video folder>/<frame file>', here e.g. "
                f"{image_key(str(frames[0]))!r}, and COCO image_id is the frame's index, "
                f"0 to {len(frames) - 1}"
            )
        # Boxes of other videos are expected (one box file for a whole split); boxes that name
        # this video, or a COCO frame index, but no frame of it are a mistake worth a line.
        folders = {k.split("/")[0] for k in keys}
        stray = [
            k
            for k in boxes
            if (isinstance(k, int) and not 0 <= k < len(frames))
            or (isinstance(k, str) and k not in keys and k.split("/")[0] in folders)
        ]
        if stray:
            warnings.warn(
                f"{source}: boxes of {len(stray)} images name no frame of {name} and are ignored "
                f"(e.g. {stray[0]!r}; {len(matched)} of its {len(frames)} frames have boxes)",
                stacklevel=3,
            )
        every = np.concatenate(list(matched.values())) if matched else np.zeros((0, 5))
        if not len(every):
            return matched
        threshold = self.clip_config.min_box_score
        scored = every[:, 4] >= threshold
        sized = (every[:, 2] > 1) & (every[:, 3] > 1)
        if not scored.any():
            raise KpdiffInputError(
                f"{source}: all {len(every)} boxes of {name} score below min_box_score "
                f"{threshold:g} (highest {every[:, 4].max():.3g}); lower it (--min-box-score)"
            )
        if not (scored & sized).any():
            raise KpdiffInputError(
                f"{source}: every box of {name} scoring >= {threshold:g} is at most 1 pixel wide "
                f"or high (w, h must be > 1)"
            )
        return matched


def _track(persons: list[dict[str, Any]], n_frames: int, tracker: IoUTracker) -> None:
    """Set every person's ``track`` and ``track_id`` (the tracker's id), frame by frame."""
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for p in persons:
        by_frame.setdefault(int(p["frame_index"]), []).append(p)
    for i in range(n_frames):
        here = by_frame.get(i, [])
        boxes = np.array([p["box"] for p in here], np.float64).reshape(-1, 4)
        for p, tid in zip(here, tracker.update(boxes), strict=True):
            p["track"] = p["track_id"] = int(tid)


def render_video(
    prediction: VideoPrediction,
    path: str | Path,
    *,
    min_score: float = 0.2,
    fps: float = 10.0,
    max_width: int = 640,
) -> Path:
    """Draw skeletons on the frames and write a GIF (``.gif``) or an MP4 (``.mp4``) atomically.

    Joints with a score below ``min_score`` are not drawn; a joint's circle grows with its
    ensemble spread (uncertainty).
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise KpdiffInputError(f"path: expected a .gif or .mp4 file, got {path}")
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for p in prediction.persons:
        by_frame.setdefault(int(p["frame_index"]), []).append(p)
    images = []
    for i, frame in enumerate(prediction.frames):
        image = read_frame(frame)
        if persons := by_frame.get(i, []):
            image = draw_poses(
                image,
                np.stack([p["keypoints"] for p in persons]),
                prediction.schema,
                spread=np.stack([p.get("spread", np.zeros(len(p["keypoints"]))) for p in persons]),
                track_ids=[int(p.get("track_id", 0)) for p in persons],
                min_score=min_score,
                copy=False,
            )
        scale = min(1.0, max_width / image.shape[1])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        images.append(image)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            pil = [Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)) for im in images]
            pil[0].save(
                tmp, format="GIF", save_all=True, append_images=pil[1:],
                duration=int(1000 / fps), loop=0,
            )  # fmt: skip
        else:
            h, w = images[0].shape[:2]
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():  # else OpenCV silently writes nothing
                raise KpdiffInputError(
                    f"path: OpenCV cannot write {path} (no mp4v encoder); write a .gif instead"
                )
            for im in images:
                writer.write(im)
            writer.release()
    return path


def save_prediction_json(prediction: VideoPrediction, path: str | Path) -> Path:
    """The raw per-person predictions (with spread) as JSON, atomically."""
    rows = [
        {
            "frame_index": int(p["frame_index"]),
            "track_id": int(p["track_id"]),
            "box": [float(v) for v in p["box"]],
            "box_score": float(p["box_score"]),
            "keypoints": np.asarray(p["keypoints"]).round(3).tolist(),
            "spread": np.asarray(p["spread"]).round(3).tolist(),
        }
        for p in prediction.persons
    ]
    return write_json_atomic({"video": prediction.name, "persons": rows}, path)
