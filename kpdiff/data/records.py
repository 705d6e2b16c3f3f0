"""The typed record of one predicted person, and :func:`batch_poses`, which makes them.

The evaluation, :class:`~kpdiff.pipeline.PosePipeline`, the video predictor and its writers all
pass :class:`PersonPose` records. Image coordinates follow :mod:`kpdiff.data.structures` (pixels,
origin at the top-left pixel's centre, boxes ``xywh``). Building a record needs only numpy;
:func:`batch_poses` imports torch when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

import numpy as np

from kpdiff.data.structures import PersonAnnotation
from kpdiff.errors import KpdiffInputError, check_number

__all__ = ["PersonPose", "batch_poses"]


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PersonPose:
    """One predicted person on one frame; frozen, its arrays float64 and read-only.

    ``PersonPose(keypoints, scores, spread, box, box_score, track_id)`` takes the prediction
    positionally; where it belongs and the ground truth are keywords. ``==`` compares every
    field (arrays element-wise, NaN equal to NaN); :func:`dataclasses.replace` gives a changed
    copy, e.g. ``replace(person, track_id=3)``.

    Attributes:
        keypoints: ``[K, 2]`` ``(x, y)`` in image pixels, in the schema's joint order.
        scores: ``[K]`` joint scores: the heatmap's maximum × the box score.
        spread: ``[K]`` the ensemble's disagreement per joint in image pixels (an uncertainty:
            large where the N hypotheses disagree), or ``None`` (no ensemble).
        box: ``[4]`` the person box ``xywh`` in image pixels.
        box_score: the detector's (or box file's) score of the box; ``1`` for ground-truth
            boxes. Default ``1.0``.
        track_id: the same person across the frames of a video (a tracker's id), or ``None``:
            not tracked, and the writers number the frame's persons by position. Default
            ``None``.
        video: the video's name, or ``None``. Keyword only, as all below. Default ``None``.
        frame_index: the frame's position in the video (0-based), or ``None``. Default ``None``.
        crop_keypoints: ``[K, 2]`` ``(x, y)`` in the pixels of the person's crop (the model's
            input), in the schema's joint order, or ``None``. Default ``None``.
        gt_keypoints: ``[K, 3]`` ground truth ``(x, y, v)`` in image pixels (``v > 0``:
            annotated), or ``None`` (no ground truth: inference, detector boxes). Default
            ``None``.
        gt_track_id: the track id of the ground-truth person whose box was used, ``-1`` when
            unknown (detector boxes, inference). Default ``-1``.

    Raises:
        KpdiffInputError: an array of the wrong shape (``K`` is the number of rows of
            ``keypoints``) or a value of the wrong type.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    spread: np.ndarray | None
    box: np.ndarray
    box_score: float = 1.0
    track_id: int | None = None
    _: KW_ONLY
    video: str | None = None
    frame_index: int | None = None
    crop_keypoints: np.ndarray | None = None
    gt_keypoints: np.ndarray | None = None
    gt_track_id: int = -1

    def __post_init__(self) -> None:
        kp = _array("keypoints", self.keypoints, (-1, 2))
        k = len(kp)
        arrays = {
            "keypoints": kp,
            "scores": _array("scores", self.scores, (k,)),
            "spread": _array("spread", self.spread, (k,), optional=True),
            "box": _array("box", self.box, (4,)),
            "crop_keypoints": _array("crop_keypoints", self.crop_keypoints, (k, 2), optional=True),
            "gt_keypoints": _array("gt_keypoints", self.gt_keypoints, (k, 3), optional=True),
        }
        for name, value in arrays.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "box_score", check_number("box_score", self.box_score))
        for name in ("track_id", "frame_index", "gt_track_id"):
            object.__setattr__(self, name, _int(name, getattr(self, name), name != "gt_track_id"))
        if self.video is not None and not isinstance(self.video, str):
            raise KpdiffInputError(f"video: expected a str or None, got {self.video!r}")

    def triplets(self) -> np.ndarray:
        """``[K, 3]`` ``(x, y, score)`` in image pixels: the layout of the PoseTrack and COCO
        files and of :func:`~kpdiff.drawing.draw_poses` (a new, writable array)."""
        return np.column_stack([self.keypoints, self.scores])

    def to_annotation(self) -> PersonAnnotation:
        """The prediction as a :class:`~kpdiff.data.structures.PersonAnnotation` (what the
        PoseTrack writers and the AP take): keypoints ``(x, y, score)``, the box, the track id,
        score = ``box_score``; new arrays."""
        return PersonAnnotation(
            keypoints=self.triplets(),
            box=self.box.copy(),
            track_id=self.track_id,
            score=self.box_score,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: arrays as (nested) lists of floats, ``None`` kept.
        :meth:`from_dict` reads it back to an equal record."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PersonPose:
        """The record of a :meth:`to_dict` mapping (missing optional fields take their
        defaults).

        Raises:
            KpdiffInputError: an unknown or missing field, or a value :class:`PersonPose`
                refuses.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in ("keypoints", "scores", "spread", "box") if n not in data]
        if unknown or missing:
            raise KpdiffInputError(
                f"PersonPose.from_dict: unknown fields {unknown}, missing fields {missing}"
            )
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PersonPose):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b, equal_nan=True):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # equal records hold equal (mutable-typed) arrays

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return (
            f"PersonPose(K={len(self.keypoints)}, box=[{box}], box_score={self.box_score:.3g}, "
            f"track_id={self.track_id}, video={self.video!r}, frame_index={self.frame_index})"
        )


def _array(
    name: str, value: Any, shape: tuple[int, ...], *, optional: bool = False
) -> np.ndarray | None:
    """``value`` as a new read-only float64 array of ``shape`` (``-1``: any length)."""
    if value is None and optional:
        return None
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise KpdiffInputError(
            f"{name}: expected a float array {list(shape)}, got {value!r}"
        ) from err
    if arr.ndim != len(shape) or any(
        s not in (-1, n) for s, n in zip(shape, arr.shape, strict=True)
    ):
        want = "[" + ", ".join("K" if s == -1 else str(s) for s in shape) + "]"
        raise KpdiffInputError(f"{name}: expected shape {want}, got {list(arr.shape)}")
    arr.flags.writeable = False
    return arr


def _int(name: str, value: Any, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise KpdiffInputError(
            f"{name}: expected an int{' or None' if optional else ''}, got {value!r}"
        )
    return int(value)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def batch_poses(batch: Mapping[str, Any], result: Any) -> list[PersonPose]:
    """The predicted poses of a collated batch of clips, one record per clip.

    Args:
        batch: a collated :class:`~kpdiff.data.clips.TopDownClipDataset` batch:
            ``inverse_affine [B, 2, 3]``, ``joint_order [B, K]`` (optional), ``score [B]`` (box
            scores), ``box [B, 4]``, ``video``, ``frame_index [B]``, ``track_id [B]``; with
            ground truth also ``keypoints [B, K, 3]`` and ``weights``.
        result: what the model's ``predict`` returns for the batch: ``keypoints [B, K, 2]``
            (crop pixels), ``scores [B, K]`` and ``spread [B, K]`` (crop pixels).

    Returns:
        One :class:`PersonPose` per clip, untracked (``track_id`` ``None``): ``keypoints``
        in image pixels, ``scores`` = the joint's heatmap maximum × the box score, ``spread``
        in image pixels (crop pixels times the crop's scale), ``crop_keypoints``, ``video``,
        ``frame_index``, ``box``, ``box_score``, ``gt_track_id`` = the clip's ``track_id``, and
        ``gt_keypoints`` when the batch has ground truth (some joint of nonzero weight).
    """
    import torch  # here: the records themselves need only numpy

    from kpdiff.data.clips import crop_to_image

    meta = {k: batch[k] for k in ("inverse_affine", "joint_order") if k in batch}
    scores = result.scores.float().cpu() * batch["score"].float().view(-1, 1)
    crop = result.keypoints.float().cpu()
    # One mapping back to the image: the score and the spread travel as extra columns.
    columns = [crop, scores[..., None], result.spread.float().cpu()[..., None]]
    mapped = crop_to_image(torch.cat(columns, dim=-1), meta).numpy()
    kp_image, score, spread = mapped[..., :2], mapped[..., 2], mapped[..., 3]
    # Spread is in crop pixels; report it in image pixels with the crop's scale.
    pixel = np.abs(np.linalg.det(batch["inverse_affine"].double().numpy()[:, :, :2])) ** 0.5
    crop = crop.numpy()
    if meta.get("joint_order") is not None:  # crop channel k is image joint joint_order[k]
        order = np.asarray(meta["joint_order"], np.int64).reshape(len(crop), -1)
        crop = np.take_along_axis(crop, np.argsort(order, axis=1)[..., None], axis=1)
    gt = None
    if "keypoints" in batch and batch["weights"].sum() > 0:
        gt = crop_to_image(batch["keypoints"].float(), meta).numpy()
    return [
        PersonPose(
            kp_image[i],
            score[i],
            spread[i] * pixel[i],
            batch["box"][i].double().numpy(),
            float(batch["score"][i]),
            video=batch["video"][i],
            frame_index=int(batch["frame_index"][i]),
            crop_keypoints=crop[i],
            gt_keypoints=None if gt is None else gt[i],
            gt_track_id=int(batch["track_id"][i]),
        )
        for i in range(len(kp_image))
    ]
