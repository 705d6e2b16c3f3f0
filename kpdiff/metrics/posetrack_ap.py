"""PoseTrack multi-person pose AP, computed exactly as the official poseval toolkit does.

Protocol (poseval's ``evaluateAP`` / ``eval_helpers``; see ``docs/evaluation.md``):

1. Frames: a GT frame counts when it is labelled and lists at least one person; its prediction
   frame (same position in the video) counts with it, all others are dropped.
2. Ignore regions: GT and predicted joints strictly inside a polygon of the GT frame
   (``shapely`` ``contains``: a point on the boundary stays) are removed.
3. A joint is present unless ``(x, y, third value) == (0, 0, 0)``.
4. Per frame, scores unused: ``dist[p, g, j] = ‖x̂_pj − x_gj‖ / headSize_g`` with
   ``headSize = 0.6 · ‖head box diagonal‖``; joint ``j`` of ``p`` is correct for ``g`` when both
   exist and ``dist ≤ 0.5``; ``pck[p, g] = #correct / #joints annotated in g``. Each prediction
   keeps only its best GT (first on ties); each GT then takes, among the predictions that kept
   it, the one with the highest ``pck`` (first on ties) if that ``pck > 0``.
5. Every present predicted joint is a detection with its score: a true positive when its
   prediction is matched and the joint is correct for the matched GT, else a false positive.
6. Per joint over the whole set: detections ranked by score (poseval's own
   ``argsort(scores)[::-1]`` on the scores in data order, so ties rank as in poseval), VOC
   all-point AP × 100. A joint with detections but no GT gets NaN; one with no detections 0.
   Columns average their joints (NaN propagates); ``Mean`` averages the non-NaN joint APs.

The steps live in two modules: :mod:`kpdiff.metrics.posetrack_set` reads, pairs and checks the
videos and applies the ignore regions (1 to 3), :mod:`kpdiff.metrics.posetrack_match` matches
predictions to persons (4); this module ranks the detections and computes the APs (5 and 6).
"""

from __future__ import annotations

import gc
import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic
from kpdiff.metrics.posetrack_match import head_size, match
from kpdiff.metrics.posetrack_set import EvaluatedSet, ObjectVideo, TableVideo, Video, gather

__all__ = [
    "PCKH_THRESHOLD",
    "FrameRule",
    "PoseTrackAP",
    "evaluate_files",
    "head_size",
    "posetrack_ap",
]

FrameRule = Literal["poseval", "labeled"]
"""Which ground-truth frames :func:`posetrack_ap` evaluates (see its ``frames`` argument)."""

PCKH_THRESHOLD = 0.5
"""A joint is correct when its distance to the GT is at most this fraction of the head size."""


@dataclass
class PoseTrackAP:
    """The result of :func:`posetrack_ap`, in percent.

    Attributes:
        joints: evaluated joint name -> AP (NaN when the joint has detections but no GT).
        columns: column name -> AP (``Head``, ``Shoulder`` ... ``Ankle`` for PoseTrack), then
            ``Mean``: the mean of the non-NaN joint APs (poseval's "Total").
    """

    joints: dict[str, float]
    columns: dict[str, float]

    def table(self) -> str:
        """The columns as a two-line text table, one decimal (like DiffPose's Table 1)."""
        widths = [max(len(c), 5) for c in self.columns]
        head = "  ".join(c.rjust(w) for c, w in zip(self.columns, widths, strict=True))
        vals = [f"{v:.1f}" if math.isfinite(v) else "n/a" for v in self.columns.values()]
        return head + "\n" + "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        """``{"joints": {name: AP}, "columns": {name: AP}}`` with NaN as ``None``."""

        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (float(v) if math.isfinite(v) else None) for k, v in d.items()}

        return {"joints": clean(self.joints), "columns": clean(self.columns)}

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string (NaN written as ``null``)."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically; returns the path."""
        return write_json_atomic(self.to_dict(), path)


def _voc_ap(scores: np.ndarray, labels: np.ndarray, n_gt: float) -> float:
    """VOC all-point AP × 100 of detections ranked by score, as poseval computes it."""
    if len(scores) == 0:
        return 0.0
    order = scores.argsort()[::-1]  # poseval's exact call: its tie order is kept
    tp = np.cumsum(labels[order])
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / n_gt  # NaN when the joint has no GT
    precision = tp / np.arange(1, len(tp) + 1)
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1  # where recall changes
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]) * 100)


def _check_threshold(threshold: Any) -> None:
    real = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
    if not (real and math.isfinite(threshold) and threshold > 0):
        raise KpdiffInputError(f"threshold: expected a finite number > 0, got {threshold!r}")


def posetrack_ap(
    gt: Sequence[VideoAnnotation],
    pred: Sequence[VideoAnnotation],
    schema: KeypointSchema | str = POSETRACK,
    *,
    threshold: float = PCKH_THRESHOLD,
    frames: FrameRule = "poseval",
) -> PoseTrackAP:
    """Per-joint AP of ``pred`` against ``gt``, reproducing poseval (module docstring).

    Args:
        gt: ground-truth videos (PoseTrack17/18/21 as read by :mod:`kpdiff.data.posetrack`);
            keypoints ``[K, 3]`` ``(x, y, v)``, head boxes ``xyxy``.
        pred: predicted videos with the same names and the same frames in the same order;
            keypoints ``[K, 3]`` ``(x, y, score)``. Videos without GT are ignored.
        schema: keypoint schema or its name (default :data:`POSETRACK`): which joints are
            evaluated and how columns group them.
        threshold: PCKh threshold as a fraction of the head size (default 0.5).
        frames: which ground-truth frames are evaluated. ``"poseval"`` (default): every frame
            that lists a person, labelled or not, as poseval does. ``"labeled"``: only those
            whose ``is_labeled`` is true as well (PoseTrack21, whose unlabelled frames carry
            box-only persons that poseval's rule would count as missed people).

    Returns:
        :class:`PoseTrackAP` with per-joint and per-column APs in percent.

    Raises:
        KpdiffInputError: a GT video without prediction video, a frame-count mismatch, image ids
            that differ, duplicate track ids in a frame, keypoints of the wrong shape or not
            finite, a labelled GT person with joints but no head box, an ignore region that is
            not a polygon. Messages name the video and the frame.
    """
    sch = get_schema(schema)
    if frames not in ("poseval", "labeled"):
        raise KpdiffInputError(f"frames: expected 'poseval' or 'labeled', got {frames!r}")
    _check_threshold(threshold)
    evaluated = gather(
        [ObjectVideo(v) for v in gt],
        [ObjectVideo(v) for v in pred],
        sch,
        labeled_only=frames == "labeled",
    )
    return _result(evaluated, sch, threshold)


def _result(s: EvaluatedSet, sch: KeypointSchema, threshold: float) -> PoseTrackAP:
    """Match every frame of ``s``, then the per-joint VOC APs and the columns."""
    names = [sch.keypoints[j] for j in sch.evaluated]
    label = match(s, threshold)  # [P, J]
    n_gt = s.gt_has.sum(axis=0)  # [J]
    aps = np.zeros(len(names))
    for j in range(len(names)):
        det = s.pr_has[:, j]  # detections in set order: poseval's order for equal scores
        aps[j] = _voc_ap(s.pr_score[det, j], label[det, j], float(n_gt[j]))
    joints = dict(zip(names, aps.tolist(), strict=True))
    columns = {
        col: float(np.mean([joints[sch.keypoints[j]] for j in idx]))  # NaN propagates
        for col, idx in sch.eval_groups.items()
    }
    finite = aps[~np.isnan(aps)]
    columns["Mean"] = float(finite.mean()) if finite.size else math.nan
    return PoseTrackAP(joints=joints, columns=columns)


def evaluate_files(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    schema: KeypointSchema | str = POSETRACK,
    *,
    split: str = "val",
    threshold: float = PCKH_THRESHOLD,
    frames: FrameRule | None = None,
) -> PoseTrackAP:
    """``kpdiff evaluate``: the AP of a folder of prediction files against ground-truth files,
    read as poseval reads them.

    Ground-truth files are taken in the order the file system lists them (poseval's ``glob``),
    which is the order in which equal scores are ranked; predictions are paired by video name.

    The result, and every error, is that of :func:`posetrack_ap` on
    :func:`~kpdiff.data.posetrack.read_posetrack`'s videos, but PoseTrack18/21 files are read a
    file at a time straight into the metric's arrays (numbers converted in bulk, no object per
    frame or person), so that a PoseTrack18-val-sized set takes about a second.

    Args:
        gt: ground-truth file, folder or dataset root (see
            :func:`~kpdiff.data.posetrack.read_posetrack`).
        pred: the predictions' file or folder.
        schema: keypoint schema or its name (default :data:`POSETRACK`).
        split: the split folder under a dataset root (default ``"val"``).
        threshold: PCKh threshold (default 0.5).
        frames: see :func:`posetrack_ap`; default ``"labeled"`` when the ground truth is
            PoseTrack21 (which poseval does not read), else ``"poseval"``.
    """
    from kpdiff.data.posetrack import format_of, list_annotation_files, read_files
    from kpdiff.data.posetrack17 import parse17
    from kpdiff.data.posetrack18 import video_tables18
    from kpdiff.data.posetrack_json import load_json

    sch = get_schema(schema)
    files = list_annotation_files(gt, split, "listing")
    formats: list[str] = []

    def reader(predictions: bool):
        def read(f: Path) -> list[Video]:  # a file at a time: its JSON is dropped once read
            data = load_json(f)
            formats.append(format_of(data, f))
            if formats[-1] == "posetrack17":
                return [ObjectVideo(v) for v in parse17(data, f, predictions, sch)]
            return [TableVideo(t) for t in video_tables18(data, f, predictions, sch)]

        return read

    gc_was_on = gc.isenabled()
    gc.disable()  # parsed JSON is millions of acyclic objects: collecting them finds nothing
    try:
        truth = read_files(files, reader(False))
    finally:
        if gc_was_on:
            gc.enable()
    if frames is None:
        frames = "labeled" if formats[0] == "posetrack21" else "poseval"
    if frames not in ("poseval", "labeled"):
        raise KpdiffInputError(f"frames: expected 'poseval' or 'labeled', got {frames!r}")
    _check_threshold(threshold)
    pred_files = list_annotation_files(pred, split)
    gc.disable()
    try:
        predictions = read_files(pred_files, reader(True))
    finally:
        if gc_was_on:
            gc.enable()
    evaluated = gather(truth, predictions, sch, labeled_only=frames == "labeled")
    return _result(evaluated, sch, threshold)
