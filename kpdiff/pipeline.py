"""From a video to tracked poses in one call: detection, clips, DiffPose, tracking, lazily.

    pipe = PosePipeline.from_pretrained("runs/demo/best", detector_weights="frcnn.pth")
    for frame in pipe.stream("walk.mp4"):      # any length: frames are decoded as they go
        for person in frame.persons:
            person.keypoints, person.spread, person.track_id   # [K, 2] px, [K] px, int
        cv2.imwrite(f"{frame.index:06d}.jpg", frame.plot())
    frames = pipe(video_array)                 # [T, H, W, 3] BGR uint8 → list[FramePoses]

A frame's poses are ready once the frame ``δ`` after it has been read (its clip is complete)
and the batch its people joined has run, so :meth:`PosePipeline.stream` holds only ``2δ + 1``
frames and one batch of clips, whatever the length of the video. The batches, and so the noise
each clip gets, are those of :class:`~kpdiff.engine.predict.VideoPredictor` with the same
``batch_size`` and ``seed``: both give the same poses for the same video and boxes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from kpdiff.data.clips import IMAGE_SUFFIXES, ClipSample, TopDownClipDataset, read_frame
from kpdiff.data.detections import DEFAULT_MIN_SCORE, image_key, read_detections
from kpdiff.data.records import PersonPose, batch_poses
from kpdiff.data.schemas import KeypointSchema, get_schema
from kpdiff.detection import PersonDetector
from kpdiff.drawing import draw_poses
from kpdiff.errors import KpdiffInputError
from kpdiff.tracking import IoUTracker
from kpdiff.video import VideoFile, frame_name

__all__ = ["FramePoses", "PosePipeline"]


@dataclass
class FramePoses:
    """The poses of one frame.

    Attributes:
        index: the frame's position in the video (0-based).
        image: the frame, BGR ``uint8`` ``[H, W, 3]``.
        persons: its people (:class:`~kpdiff.data.records.PersonPose`, tracked), in the order
            of their boxes.
        schema: the keypoint schema (names and skeleton).
    """

    index: int
    image: np.ndarray
    persons: list[PersonPose]
    schema: KeypointSchema

    def keypoints(self) -> np.ndarray:
        """``[P, K, 3]`` ``(x, y, score)`` of the frame's people (``[0, K, 3]`` for none)."""
        k = self.schema.num_keypoints
        rows = [p.triplets() for p in self.persons]
        return np.stack(rows) if rows else np.zeros((0, k, 3))

    def plot(self, *, min_score: float = 0.2, spread: bool = True) -> np.ndarray:
        """The frame with its skeletons drawn (:func:`~kpdiff.drawing.draw_poses`), a new BGR
        ``uint8`` ``[H, W, 3]`` array; colours follow the track ids, and with ``spread``
        (default) a joint's circle grows with its uncertainty. Default ``min_score`` ``0.2``."""
        drawn = self.persons and all(p.spread is not None for p in self.persons)
        return draw_poses(
            self.image,
            self.keypoints(),
            self.schema,
            spread=np.stack([p.spread for p in self.persons]) if spread and drawn else None,
            track_ids=[p.track_id for p in self.persons],
            min_score=min_score,
        )


class PosePipeline:
    """Tracked poses from a video, frames or an image, with a DiffPose model.

    Args:
        model: a ``DiffPose`` (or any model with its ``config`` and ``predict``).
        detector: finds the person boxes when a call gives none. Default ``None``: every call
            must give its boxes.
        num_samples: N hypotheses per person. Default ``10``. steps: DDIM steps. Default ``4``.
        batch_size: clips per forward. Default ``32``.
        seed: sampling seed (each call starts from it). Default ``0``.
        schema: keypoint schema (names, skeleton); one that would relabel the model's joints
            is refused. Default ``None``: the model's (``"posetrack"`` when it records none).
        min_box_score: boxes scoring below are ignored, as are boxes at most 1 pixel wide or
            high. Default ``0.2``.
        edge: neighbour frames beyond the video's ends: ``"clamp"`` or ``"repeat"``.
            Default ``"clamp"``.
        tracker: links people across frames; a fresh copy runs on each call. Default
            :class:`~kpdiff.tracking.IoUTracker` ``()``.
    """

    def __init__(
        self,
        model: Any,
        *,
        detector: PersonDetector | None = None,
        num_samples: int = 10,
        steps: int = 4,
        batch_size: int = 32,
        seed: int = 0,
        schema: KeypointSchema | str | None = None,
        min_box_score: float = DEFAULT_MIN_SCORE,
        edge: str = "clamp",
        tracker: IoUTracker | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise KpdiffInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if isinstance(min_box_score, bool) or not (
            isinstance(min_box_score, int | float) and math.isfinite(min_box_score)
        ):
            raise KpdiffInputError(
                f"min_box_score: expected a finite number, got {min_box_score!r}"
            )
        self.model = model.eval()
        self.detector = detector
        self.num_samples, self.steps, self.batch_size, self.seed = (
            num_samples, steps, batch_size, seed,
        )  # fmt: skip
        self.schema = get_schema(schema or model.config.schema or "posetrack")
        model.config.check_schema(self.schema)
        self.clip_config = model.config.data_config(edge=edge, min_box_score=min_box_score)
        self.tracker = tracker or IoUTracker()

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        detector: str | PersonDetector | None = "fasterrcnn_mobilenet_v3_large_fpn",
        detector_weights: str | Path | None = None,
        detector_score: float = 0.5,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> PosePipeline:
        """A pipeline around ``DiffPose.from_pretrained(directory)``.

        Args:
            directory: a folder written by ``save_pretrained`` (e.g. a run's ``best/``).
            detector: a :data:`~kpdiff.detection.DETECTORS` name, a ready
                :class:`~kpdiff.detection.PersonDetector`, or ``None`` (boxes given per call).
                Default ``"fasterrcnn_mobilenet_v3_large_fpn"``.
            detector_weights: the detector's ``.pth`` file; ``None``: torchvision's cache or
                download (an error says how to get them when neither works).
            detector_score: the detector's score threshold. Default ``0.5``.
            device: where both models run. Default ``"cpu"``.
            **kwargs: passed to the constructor (``num_samples``, ``steps``, ``batch_size``, …).
        """
        from kpdiff.diffpose import DiffPose

        model = DiffPose.from_pretrained(directory, map_location=device)
        if isinstance(detector, str):
            detector = PersonDetector(
                detector, detector_weights, min_score=detector_score, device=device
            )
        return cls(model, detector=detector, **kwargs)

    def __call__(
        self, source: Any, boxes: Mapping[int, np.ndarray] | str | Path | None = None
    ) -> list[FramePoses]:
        """Every frame's poses, as a list (:meth:`stream` lazily). Arguments as :meth:`stream`."""
        return list(self.stream(source, boxes))

    @torch.no_grad()
    def stream(
        self, source: Any, boxes: Mapping[int, np.ndarray] | str | Path | None = None
    ) -> Iterator[FramePoses]:
        """The poses of each frame, in order, lazily.

        Args:
            source: a video file, a folder of frames, an image file, a BGR ``uint8`` array
                ``[H, W, 3]`` (one image) or ``[T, H, W, 3]`` (frames), or any iterable of
                frame arrays or image paths.
            boxes: per frame index, ``[N, 5]`` ``(x, y, w, h, score)`` person boxes; or a
                detection file (COCO layout keyed by frame index, or DCPose keyed by
                ``"<folder>/<frame file>"``). Default ``None``: the pipeline's detector.

        Raises:
            KpdiffInputError: an unreadable source, boxes and no detector, bad boxes.
        """
        name, frames, keys = _frames(source)
        if boxes is None and self.detector is None:
            raise KpdiffInputError(
                "boxes: none given and the pipeline has no detector (pass boxes, or "
                "PosePipeline(..., detector=PersonDetector()))"
            )
        per_frame = _boxed(frames, self.detector) if boxes is None else _given(frames, boxes, keys)
        run = _Run(self, name)
        for image, frame_boxes in per_frame:
            run.add(image, frame_boxes)
            yield from run.finished()
        if not run.names:
            raise KpdiffInputError(f"source: {name} has no frames")
        run.close()
        yield from run.finished()

    @property
    def device(self) -> torch.device:
        """Where the pose model runs."""
        return next(self.model.parameters()).device


class _Run:
    """The state of one :meth:`PosePipeline.stream`: the frames its clips still need, the
    clips waiting for a batch, the people predicted per frame, the tracker."""

    def __init__(self, pipe: PosePipeline, name: str) -> None:
        self.pipe, self.name = pipe, name
        self.delta = pipe.model.config.delta
        self.names: list[str] = []
        self.images: dict[int, np.ndarray] = {}  # frames not yet yielded
        self.window: dict[int, np.ndarray] = {}  # frames a clip still needs
        self.boxes: dict[int, np.ndarray] = {}  # usable boxes of frames not yet cropped
        self.pending: deque[dict[str, Any]] = deque()  # cropped clips waiting for a batch
        self.rows: dict[int, list[PersonPose]] = {}  # predicted people per frame
        self.waiting: dict[int, int] = {}  # clips per frame not yet predicted
        self.tracker = dataclasses.replace(pipe.tracker)  # fresh state
        self.generator = torch.Generator(device=pipe.device).manual_seed(pipe.seed)
        self.dataset = TopDownClipDataset(
            [], schema=pipe.schema, config=pipe.clip_config, frames=_Window(self.window)
        )
        self.next_out = 0

    def add(self, image: np.ndarray, boxes: np.ndarray) -> None:
        """Read one more frame and its boxes ``[N, 5]``; crop and predict what is ready."""
        i = len(self.names)
        self.names.append(frame_name(self.name, i))
        self.images[i] = self.window[i] = image
        cfg = self.pipe.clip_config
        usable = (boxes[:, 4] >= cfg.min_box_score) & (boxes[:, 2] > 1) & (boxes[:, 3] > 1)
        self.boxes[i] = boxes[usable]
        self.waiting[i] = int(usable.sum())
        if i - self.delta >= 0:
            self._crop(i - self.delta)
        while len(self.pending) >= self.pipe.batch_size:
            self._predict(self.pipe.batch_size)

    def close(self) -> None:
        """The video ended: crop the last frames' clips and predict every clip left."""
        n = len(self.names)
        for key in range(max(0, n - self.delta), n):
            self._crop(key)
        while self.pending:
            self._predict(min(self.pipe.batch_size, len(self.pending)))

    def finished(self) -> Iterator[FramePoses]:
        """The frames, in order, whose people are all predicted; tracked as they leave."""
        while self.waiting.get(self.next_out) == 0:
            i = self.next_out
            rows = self.rows.pop(i, [])
            ids = self.tracker.update(
                np.array([r.box for r in rows]).reshape(-1, 4),
                np.array([r.box_score for r in rows]),
            )
            persons = [
                dataclasses.replace(r, track_id=int(t)) for r, t in zip(rows, ids, strict=True)
            ]
            del self.waiting[i]
            self.next_out += 1
            yield FramePoses(i, self.images.pop(i), persons, self.pipe.schema)

    def _crop(self, key: int) -> None:
        """Crop frame ``key``'s clips (every frame of them has been read: clamping to the
        frames read so far is clamping to the video), then forget frames no clip needs."""
        paths = tuple(self.names)
        for box in self.boxes.pop(key):
            self.dataset.samples = [ClipSample(self.name, paths, key, box[:4], float(box[4]))]
            self.pending.append(self.dataset[0])
        for old in [j for j in self.window if j <= key - self.delta]:
            del self.window[old]

    def _predict(self, count: int) -> None:
        items = [self.pending.popleft() for _ in range(count)]
        batch = default_collate(items)
        result = self.pipe.model.predict(
            batch["clip"].to(self.pipe.device),
            num_samples=self.pipe.num_samples,
            steps=self.pipe.steps,
            generator=self.generator,
        )
        for row in batch_poses(batch, result):
            self.rows.setdefault(row.frame_index, []).append(row)
            self.waiting[row.frame_index] -= 1


class _Window:
    """``get(frame name)`` of the frames in the sliding window (the clip dataset's source)."""

    def __init__(self, frames: dict[int, np.ndarray]) -> None:
        self.frames = frames

    def get(self, path: str) -> np.ndarray:
        return self.frames[int(Path(path).stem)]


def _frames(source: Any) -> tuple[str, Iterator[np.ndarray], list[str] | None]:
    """``(name, BGR frames, the frames' DCPose keys when they have names)`` of any source
    :meth:`PosePipeline.stream` takes."""
    if isinstance(source, np.ndarray):
        array = source[None] if source.ndim == 3 else source
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or not len(array):
            raise KpdiffInputError(
                f"source: expected a BGR uint8 image [H, W, 3] or frames [T, H, W, 3], got "
                f"{source.dtype} {list(source.shape)}"
            )
        return "video", iter(array), None
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise KpdiffInputError(f"source: {path} holds no {'/'.join(IMAGE_SUFFIXES)} frames")
            keys = [image_key(str(p.resolve())) for p in files]
            return path.name, (read_frame(p) for p in files), keys
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.is_file():
                raise KpdiffInputError(f"source: {path} does not exist")
            return path.stem, iter([read_frame(path)]), [image_key(str(path.resolve()))]
        video = VideoFile(path)
        keys = [image_key(frame_name(path.stem, i)) for i in range(len(video))]
        return path.stem, iter(video), keys
    if isinstance(source, Iterable):
        return "video", (_frame(x, i) for i, x in enumerate(source)), None
    raise KpdiffInputError(
        f"source: expected a video file, a folder, an image, an array or an iterable of frames, "
        f"got {type(source).__name__}"
    )


def _frame(x: Any, i: int) -> np.ndarray:
    if isinstance(x, str | Path):
        return read_frame(x)
    if isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[2] == 3 and x.dtype == np.uint8:
        return x
    got = f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
    raise KpdiffInputError(
        f"source[{i}]: expected a BGR uint8 [H, W, 3] frame or a path, got {got}"
    )


def _boxed(
    frames: Iterator[np.ndarray], detector: PersonDetector
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(frame, its detected boxes [N, 5])``; the detector batches frames as it goes."""
    seen: deque[np.ndarray] = deque()

    def remember() -> Iterator[np.ndarray]:
        for frame in frames:
            seen.append(frame)
            yield frame

    for found in detector.detect(remember()):
        yield seen.popleft(), found


def _given(
    frames: Iterator[np.ndarray],
    boxes: Mapping[int, np.ndarray] | str | Path,
    keys: list[str] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(frame, its boxes [N, 5])`` from a mapping by frame index or a detection file (COCO
    ``image_id`` = frame index; DCPose ``image_name`` matched to the frames' ``keys``)."""
    if isinstance(boxes, str | Path):
        if not Path(boxes).is_file():
            raise KpdiffInputError(f"boxes: {boxes} does not exist")
        read = read_detections(boxes, min_score=-math.inf)
        index = {k: i for i, k in enumerate(keys or [])}
        by_index = {
            (k if isinstance(k, int) else index[str(k)]): v
            for k, v in read.items()
            if isinstance(k, int) or str(k) in index
        }
        if read and not by_index:
            raise KpdiffInputError(
                f"boxes: {boxes}: none of its boxes names a frame of the source (COCO image_id "
                f"is the frame index; DCPose image_name ends in '<folder>/<frame file>')"
            )
        boxes = by_index
    elif not isinstance(boxes, Mapping):
        raise KpdiffInputError(
            f"boxes: expected a mapping frame index → [N, 5] boxes or a detection file, got "
            f"{type(boxes).__name__}"
        )
    checked: dict[int, np.ndarray] = {}
    for key, value in boxes.items():
        if isinstance(key, bool) or not isinstance(key, int | np.integer) or key < 0:
            raise KpdiffInputError(f"boxes: expected frame indices >= 0 as keys, got {key!r}")
        arr = np.asarray(value, np.float64)
        if arr.size and (arr.ndim != 2 or arr.shape[1] != 5 or not np.isfinite(arr).all()):
            raise KpdiffInputError(
                f"boxes[{key}]: expected finite [N, 5] (x, y, w, h, score), got {list(arr.shape)}"
            )
        checked[int(key)] = arr.reshape(-1, 5)
    for i, frame in enumerate(frames):
        yield frame, checked.get(i, np.zeros((0, 5)))
