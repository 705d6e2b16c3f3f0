"""Pose estimation on a whole video, and the files written from it (``kpdiff predict``).

Boxes come from a person detector (:class:`~kpdiff.detection.PersonDetector`) or from a JSON
file in the DCPose layout (``image_name``, ``bbox`` xywh, ``score``) keyed by
``"<video folder>/<frame file>"``, or the COCO detection layout keyed by ``image_id`` = the
frame's index in the video. The poses are those of :class:`~kpdiff.pipeline.PosePipeline`
(this is its whole-video form, with the checks of a box file and the writers).

    predictor = VideoPredictor(DiffPose.from_pretrained("runs/demo/best"))
    result = predictor(frames_or_video, "boxes.json")
    result.write_posetrack18("out/pred.json"); result.write_coco("out/coco.json")
    render_video(result, "out/overlay.gif")
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kpdiff.data.clips import IMAGE_SUFFIXES, read_frame
from kpdiff.data.detections import DEFAULT_MIN_SCORE, image_key, read_detections
from kpdiff.data.posetrack import write_posetrack18_predictions
from kpdiff.data.records import PersonPose
from kpdiff.data.schemas import KeypointSchema
from kpdiff.data.structures import FrameAnnotation, VideoAnnotation
from kpdiff.detection import PersonDetector
from kpdiff.drawing import draw_poses
from kpdiff.engine.evaluate import frame_persons
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic
from kpdiff.pipeline import PosePipeline
from kpdiff.progress import progress as _progress
from kpdiff.tracking import IoUTracker
from kpdiff.video import StreamedFrames, VideoFile, write_video

__all__ = ["VideoPrediction", "VideoPredictor", "list_frames", "render_video"]


def list_frames(source: str | Path) -> list[Path]:
    """The frames of a video: the images of a folder (sorted by name), or for a video file
    the names its frames get (``<video stem>/000000.jpg`` …; nothing is written to disk).

    Raises:
        KpdiffInputError: the path is missing, holds no image, or is not a decodable video.
    """
    return _open_video(source)[1]


def _open_video(source: str | Path) -> tuple[str, list[Path], StreamedFrames | None]:
    """``(name, frame paths, streamed frames of a video file or None for a folder)``."""
    source = Path(source)
    if not source.exists():
        raise KpdiffInputError(f"video: {source} does not exist")
    if source.is_dir():
        frames = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise KpdiffInputError(f"video: {source} holds no {'/'.join(IMAGE_SUFFIXES)} frames")
        return source.name, frames, None
    streamed = StreamedFrames(VideoFile(source), source.stem)
    return source.stem, [Path(n) for n in streamed.names()], streamed


@dataclass
class VideoPrediction:
    """Poses on every frame of one video.

    Attributes:
        name: the video's name; ``frames``: its frame files in order (for a video file, the
            names of its frames, ``<video>/000000.jpg`` …, which are not files).
        persons: one :class:`~kpdiff.data.records.PersonPose` per predicted person, in frame
            order: ``frame_index``, ``box [4]`` xywh, ``box_score``, ``keypoints [K, 2]`` and
            ``scores [K]`` (heatmap max × box score), ``spread [K]`` (ensemble disagreement in
            image pixels, an uncertainty) and ``track_id`` (the same person across frames, from
            the tracker).
        schema: the keypoint schema.
        video_file: the video file the frames were decoded from, or ``None`` (image files).
        fps: the video's frame rate (``10`` for a folder of images), used by
            :func:`render_video`.
    """

    name: str
    frames: list[Path]
    persons: list[PersonPose]
    schema: KeypointSchema
    video_file: Path | None = None
    fps: float = 10.0

    def video(self) -> VideoAnnotation:
        """The predictions as a :class:`VideoAnnotation` with every frame present (image id =
        frame index; a person without a track id gets its position in the frame)."""
        by_frame: dict[int | None, list[PersonPose]] = defaultdict(list)
        for p in self.persons:
            by_frame[p.frame_index].append(p)
        frames = [
            FrameAnnotation(
                image_path=str(p), frame_index=i, image_id=i, persons=frame_persons(by_frame[i])
            )
            for i, p in enumerate(self.frames)
        ]
        return VideoAnnotation(self.name, frames)

    def write_posetrack18(self, path: str | Path) -> Path:
        """Write a PoseTrack18 prediction file (poseval reads it), atomically."""
        return write_posetrack18_predictions(self.video(), path, schema=self.schema)

    def write_coco(self, path: str | Path) -> Path:
        """Write COCO keypoint results (+ ``keypoint_spread``), atomically."""
        records = []
        for p in self.persons:
            records.append(
                {
                    "image_id": int(p.frame_index),
                    "track_id": int(p.track_id),
                    "file_name": self.frames[p.frame_index].name,
                    "category_id": 1,
                    "bbox": [round(float(v), 2) for v in p.box],
                    "keypoints": [round(float(v), 3) for v in p.triplets().reshape(-1)],
                    "score": round(float(p.scores.mean()), 5),
                    "keypoint_spread": [round(float(v), 3) for v in _spread(p)],
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
        detector: finds the person boxes when a call gives none
            (:class:`~kpdiff.detection.PersonDetector`). Default ``None``: boxes must be given.
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
        detector: PersonDetector | None = None,
    ) -> None:
        self.pipeline = PosePipeline(
            model, detector=detector, num_samples=num_samples, steps=steps,
            batch_size=batch_size, seed=seed, schema=schema, min_box_score=min_box_score,
            edge=edge, tracker=tracker,
        )  # fmt: skip
        self.model, self.schema = self.pipeline.model, self.pipeline.schema
        self.clip_config, self.detector = self.pipeline.clip_config, detector

    def __call__(
        self,
        video: str | Path | Sequence[str | Path],
        boxes: str | Path | Mapping[str | int, np.ndarray] | None = None,
        *,
        progress: bool | None = False,
    ) -> VideoPrediction:
        """Predict every box of every frame.

        Frames are decoded once, as the clips need them (a sliding window of ``2δ + 1``
        frames, no image written to disk; with a detector, each frame is detected as it is
        read), so any length of video takes bounded memory. A detector that finds nobody
        gives an empty prediction and a warning.

        Args:
            video: a video file, a folder of frames, or the list of frame paths.
            boxes: a detection JSON file (DCPose or COCO layout), or what
                :func:`kpdiff.data.detections.read_detections` returns. Default ``None``: the
                predictor's ``detector`` finds them.
            progress: a frames/s bar on stderr (``None``: when stderr is a terminal). Default
                ``False``.
        """
        streamed = None
        if isinstance(video, str | Path):
            name, frames, streamed = _open_video(video)
        else:
            frames = [Path(p) for p in video]
            if not frames:
                raise KpdiffInputError("video: expected at least one frame, got none")
            name = frames[0].parent.name or "video"
        if boxes is None and self.detector is None:
            raise KpdiffInputError(
                "boxes: none given and the predictor has no detector (pass a box file, or "
                "VideoPredictor(..., detector=PersonDetector()))"
            )
        by_index = None
        if boxes is not None:
            source = "boxes"
            if isinstance(boxes, str | Path):
                if not Path(boxes).is_file():
                    raise KpdiffInputError(f"boxes: {boxes} does not exist")
                source = f"boxes: {boxes}"
                boxes = read_detections(boxes, min_score=-math.inf)  # counted and filtered below
            by_index = self._usable_boxes(dict(boxes), frames, name, source)
        images = streamed.video if streamed else frames
        posed = _progress(
            self.pipeline.stream(images, by_index), total=len(frames), desc=name, unit="frame",
            enabled=progress,
        )  # fmt: skip
        # the pipeline names an iterable of frames "video": the records take the video's name
        persons = [replace(p, video=name) for frame in posed for p in frame.persons]
        if boxes is None and not persons and self.detector is not None:
            warnings.warn(
                f"detector {self.detector.name}: found no person on the {len(frames)} frames of "
                f"{name} (score >= {self.detector.min_score:g}); the prediction is empty",
                stacklevel=2,
            )
        return VideoPrediction(
            name=name, frames=frames, persons=persons, schema=self.schema,
            video_file=streamed.video.path if streamed else None,
            fps=streamed.video.fps if streamed else 10.0,
        )  # fmt: skip

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


def render_video(
    prediction: VideoPrediction,
    path: str | Path,
    *,
    min_score: float = 0.2,
    fps: float | None = None,
    max_width: int = 640,
) -> Path:
    """Draw skeletons on the frames and write a GIF (``.gif``) or an H.264 MP4 (``.mp4``, plays
    in browsers), atomically.

    Joints with a score below ``min_score`` are not drawn; a joint's circle grows with its
    ensemble spread (uncertainty); colours follow ``track_id``. A video file is decoded again
    frame by frame (an MP4 is written in bounded memory).

    Args:
        prediction: what :class:`VideoPredictor` returned.
        path: the ``.gif`` or ``.mp4`` file.
        min_score: joints scoring below are not drawn. Default ``0.2``.
        fps: frames per second. Default ``None``: the video's (``10`` for image folders).
        max_width: frames wider are scaled down to it. Default ``640``.
    """
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise KpdiffInputError(f"path: expected a .gif or .mp4 file, got {path}")
    by_frame: dict[int, list[PersonPose]] = {}
    for p in prediction.persons:
        by_frame.setdefault(int(p.frame_index), []).append(p)
    if prediction.video_file is not None:
        source: Iterator[np.ndarray] = iter(VideoFile(prediction.video_file))
    else:
        source = (read_frame(f) for f in prediction.frames)

    def drawn() -> Iterator[np.ndarray]:
        for i, image in enumerate(source):
            if persons := by_frame.get(i, []):
                image = draw_poses(
                    image,
                    np.stack([p.triplets() for p in persons]),
                    prediction.schema,
                    spread=np.stack([_spread(p) for p in persons]),
                    track_ids=[0 if p.track_id is None else p.track_id for p in persons],
                    min_score=min_score,
                    copy=False,
                )
            scale = min(1.0, max_width / image.shape[1])
            if scale < 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            yield image

    return write_video(drawn(), path, fps=fps or prediction.fps)


def save_prediction_json(prediction: VideoPrediction, path: str | Path) -> Path:
    """The raw per-person predictions (with spread) as JSON, atomically."""
    rows = [
        {
            "frame_index": int(p.frame_index),
            "track_id": int(p.track_id),
            "box": [float(v) for v in p.box],
            "box_score": float(p.box_score),
            "keypoints": p.triplets().round(3).tolist(),
            "spread": _spread(p).round(3).tolist(),
        }
        for p in prediction.persons
    ]
    return write_json_atomic({"video": prediction.name, "persons": rows}, path)


def _spread(person: PersonPose) -> np.ndarray:
    """``[K]`` the person's spread, zeros when it has none."""
    return np.zeros(len(person.keypoints)) if person.spread is None else person.spread
