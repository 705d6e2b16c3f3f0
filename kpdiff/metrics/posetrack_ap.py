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
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapely

from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

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
_HEAD_FACTOR = 0.6  # headSize = 0.6 × head-box diagonal
_CHUNK_ELEMS = 1 << 22  # frames are matched in padded chunks of at most this many [P, G, J] cells


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


@dataclass
class _Frame:
    """One evaluated frame, joints restricted to the schema's evaluated ones (``J``)."""

    gt_xy: np.ndarray  # [G, J, 2]
    gt_has: np.ndarray  # [G, J] bool
    head_box: np.ndarray  # [G, 4] xyxy (NaN: none, and no joint needs one)
    pr_xy: np.ndarray  # [P, J, 2]
    pr_has: np.ndarray  # [P, J] bool
    pr_score: np.ndarray  # [P, J]


def _stack(persons: list[PersonAnnotation], k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``([N, K, 3] float64 keypoints, [N, K] bool present)`` of ``persons``; errors name the
    offending person."""
    if not persons:
        return np.zeros((0, k, 3)), np.zeros((0, k), bool)
    try:
        kp = np.asarray([p.keypoints for p in persons], np.float64).reshape(len(persons), -1, 3)
        ok = kp.shape[1] == k and bool(np.isfinite(kp).all())
        if ok:
            has = np.asarray([p.joints_present() for p in persons], bool)
            ok = has.shape == (len(persons), k)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        for n, p in enumerate(persons):
            a = np.asarray(p.keypoints)
            if a.shape != (k, 3) or not np.isfinite(a.astype(np.float64)).all():
                raise KpdiffInputError(
                    f"{where}, person {n}: keypoints must be finite with shape [{k}, 3], "
                    f"got shape {list(a.shape)}"
                )
        raise KpdiffInputError(
            f"{where}: keypoints must be finite [{k}, 3] arrays with [{k}] presence flags"
        )
    return kp, has


def _check_tracks(persons: list[PersonAnnotation], where: str) -> None:
    ids = [p.track_id for p in persons if p.track_id is not None]
    if len(set(ids)) != len(ids):
        dup = sorted({t for t in ids if ids.count(t) > 1})
        raise KpdiffInputError(f"{where}: duplicate track ids {dup}")


def head_size(head_box: np.ndarray) -> float:
    """poseval's headSize of a head box ``[4]`` ``xyxy``: 0.6 × its diagonal (pixels), with
    poseval's own arithmetic (``np.linalg.norm``), so that a joint on the threshold is judged as
    poseval judges it. A joint is correct within :data:`PCKH_THRESHOLD` × this."""
    x0, y0, x1, y1 = (float(v) for v in head_box)
    return _HEAD_FACTOR * float(np.linalg.norm(np.subtract([x1, y1], [x0, y0])))


def _head_boxes(persons: list[PersonAnnotation], needed: np.ndarray, where: str) -> np.ndarray:
    """``[G, 4]`` head boxes ``xyxy`` (NaN where a person has none and needs none)."""
    boxes = np.full((len(persons), 4), np.nan)
    for n, p in enumerate(persons):
        if p.head_box is None:
            if needed[n]:
                raise KpdiffInputError(
                    f"{where}, person {n}: head_box is missing (the PCKh reference size; "
                    "PoseTrack18 'bbox_head', PoseTrack17 x1/y1/x2/y2)"
                )
            continue
        b = np.asarray(p.head_box, np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise KpdiffInputError(f"{where}, person {n}: head_box must be 4 finite numbers")
        boxes[n] = b
    return boxes


def _head_sizes(boxes: np.ndarray) -> np.ndarray:
    """``[...]`` head sizes of ``[..., 4]`` boxes, vectorised: equal to :func:`head_size` up to
    the last bit, which only matters on the threshold (re-judged there with poseval's own call)."""
    d = boxes[..., 2:] - boxes[..., :2]
    return _HEAD_FACTOR * np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)


def _inside(frame: FrameAnnotation, xy: np.ndarray, where: str) -> np.ndarray:
    """``[N]`` bool: points strictly inside one of the frame's ignore polygons."""
    out = np.zeros(len(xy), bool)
    points = shapely.points(xy)
    for r, region in enumerate(frame.ignore_regions):
        try:
            poly = shapely.Polygon(np.asarray(region, np.float64).reshape(-1, 2))
        except (ValueError, shapely.errors.GEOSException) as e:
            raise KpdiffInputError(f"{where}: ignore region {r} is not a polygon ({e})") from None
        out |= shapely.contains(poly, points)  # not contains_xy: poseval's unprepared test
    return out


def _frame(gt: FrameAnnotation, pr: FrameAnnotation, sch: KeypointSchema, where: str) -> _Frame:
    ev, k = list(sch.evaluated), sch.num_keypoints
    g, g_has = _stack(gt.persons, k, where + ", ground truth")
    p, p_has = _stack(pr.persons, k, where + ", prediction")
    g, g_has, p, p_has = g[:, ev], g_has[:, ev], p[:, ev], p_has[:, ev]
    head = _head_boxes(gt.persons, g_has.any(axis=1), where + ", ground truth")
    if gt.ignore_regions:  # checked even without joints to test, as poseval builds them all
        inside = _inside(gt, np.concatenate([g[..., :2], p[..., :2]]).reshape(-1, 2), where)
        g_has &= ~inside[: g_has.size].reshape(g_has.shape)
        p_has &= ~inside[g_has.size :].reshape(p_has.shape)
    return _Frame(g[..., :2], g_has, head, p[..., :2], p_has, p[..., 2])


def _collect(
    gt: Sequence[VideoAnnotation],
    pred: Sequence[VideoAnnotation],
    sch: KeypointSchema,
    labeled_only: bool,
) -> list[_Frame]:
    """Pair videos by name and frames by position, check them, keep the evaluated frames."""
    by_name: dict[str, VideoAnnotation] = {}
    for v in pred:
        if v.name in by_name:
            raise KpdiffInputError(f"predictions: video {v.name!r} appears twice")
        by_name[v.name] = v
    frames, seen = [], set()
    for gv in gt:
        if gv.name in seen:
            raise KpdiffInputError(f"ground truth: video {gv.name!r} appears twice")
        seen.add(gv.name)
        pv = by_name.get(gv.name)
        if pv is None:
            raise KpdiffInputError(
                f"video {gv.name!r}: no prediction video of that name "
                f"(predictions hold {sorted(by_name)[:5]}{' ...' if len(by_name) > 5 else ''})"
            )
        if len(pv.frames) != len(gv.frames):
            raise KpdiffInputError(
                f"video {gv.name!r}: prediction has {len(pv.frames)} frames, ground truth "
                f"{len(gv.frames)} (a prediction file must hold every frame of its GT file)"
            )
        for i, (gf, pf) in enumerate(zip(gv.frames, pv.frames, strict=True)):
            where = f"video {gv.name!r}, frame {i} ({gf.image_path})"
            if gf.image_id is not None and pf.image_id is not None and gf.image_id != pf.image_id:
                raise KpdiffInputError(
                    f"{where}: prediction image id {pf.image_id} != ground-truth image id "
                    f"{gf.image_id} (frames are paired by position, as in poseval)"
                )
            _check_tracks(gf.persons, where + ", ground truth")
            _check_tracks(pf.persons, where + ", prediction")
            if gf.persons and (gf.is_labeled or not labeled_only):
                frames.append(_frame(gf, pf, sch, where))
    if not frames:
        raise KpdiffInputError(
            "ground truth: no frame to evaluate (no frame lists a person"
            + (", or none of those is labelled" if labeled_only else "")
            + f"; {sum(len(v.frames) for v in gt)} frames in {len(gt)} videos): the AP is undefined"
        )
    return frames


def _match_chunk(chunk: list[_Frame], thr: float) -> tuple[np.ndarray, ...]:
    """Vectorised poseval assignment for a chunk of frames, padded to ``[F, P, G, J]``.

    Returns ``(score [F, P, J], label [F, P, J] bool, has_pred [F, P, J] bool, n_gt [J])``.
    """
    F, J = len(chunk), chunk[0].gt_has.shape[1]
    P = max(f.pr_has.shape[0] for f in chunk)
    G = max(f.gt_has.shape[0] for f in chunk)
    pr_xy, gt_xy = np.zeros((F, P, J, 2)), np.zeros((F, G, J, 2))
    pr_has, gt_has = np.zeros((F, P, J), bool), np.zeros((F, G, J), bool)
    score, box = np.zeros((F, P, J)), np.zeros((F, G, 4))
    for n, f in enumerate(chunk):  # padding rows have no joints, so they never match
        p, g = f.pr_has.shape[0], f.gt_has.shape[0]
        pr_xy[n, :p], pr_has[n, :p], score[n, :p] = f.pr_xy, f.pr_has, f.pr_score
        gt_xy[n, :g], gt_has[n, :g], box[n, :g] = f.gt_xy, f.gt_has, f.head_box
    n_gt = gt_has.sum(axis=(0, 1))
    if P == 0 or G == 0:
        return score, np.zeros_like(pr_has), pr_has, n_gt
    head = _head_sizes(box)  # [F, G]
    diff = pr_xy[:, :, None] - gt_xy[:, None]  # [F, P, G, J, 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # zero head size: never a match
        dist = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2) / head[:, None, :, None]
    both = pr_has[:, :, None] & gt_has[:, None]  # [F, P, G, J]
    correct = (dist <= thr) & both
    near = both & (np.abs(dist - thr) <= 1e-9 * thr)  # re-judged with poseval's arithmetic
    for f, p, g, j in np.argwhere(near):
        d = np.linalg.norm(np.subtract(gt_xy[f, g, j], pr_xy[f, p, j])) / head_size(box[f, g])
        correct[f, p, g, j] = d <= thr
    pck = correct.sum(-1) / np.maximum(gt_has.sum(-1), 1)[:, None, :]  # [F, P, G]
    best_gt = pck.argmax(axis=2)  # [F, P]: each prediction keeps its best GT (first on ties)
    kept = np.where(np.arange(G) == best_gt[..., None], pck, 0.0)
    winner = kept.argmax(axis=1)  # [F, G]: each GT takes its best prediction (first on ties)
    winner[kept.max(axis=1) == 0] = -1
    matched = np.take_along_axis(winner, best_gt, axis=1) == np.arange(P)  # [F, P]
    label = np.take_along_axis(correct, best_gt[..., None, None], axis=2)[:, :, 0]
    return score, label & matched[..., None], pr_has, n_gt


def _chunks(frames: list[_Frame]) -> list[list[_Frame]]:
    out: list[list[_Frame]] = []
    cur: list[_Frame] = []
    p = g = 0
    for f in frames:
        p2, g2 = max(p, f.pr_has.shape[0]), max(g, f.gt_has.shape[0])
        if cur and (len(cur) + 1) * p2 * g2 * f.gt_has.shape[1] > _CHUNK_ELEMS:
            out.append(cur)
            cur, p2, g2 = [], f.pr_has.shape[0], f.gt_has.shape[0]
        cur.append(f)
        p, g = p2, g2
    return [*out, cur] if cur else out


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
    names = [sch.keypoints[j] for j in sch.evaluated]
    if frames not in ("poseval", "labeled"):
        raise KpdiffInputError(f"frames: expected 'poseval' or 'labeled', got {frames!r}")
    real = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
    if not (real and math.isfinite(threshold) and threshold > 0):
        raise KpdiffInputError(f"threshold: expected a finite number > 0, got {threshold!r}")
    evaluated = _collect(gt, pred, sch, labeled_only=frames == "labeled")
    parts: list[tuple[np.ndarray, ...]] = [_match_chunk(c, threshold) for c in _chunks(evaluated)]
    aps = np.zeros(len(names))
    for j in range(len(names)):
        s = [sc[..., j][has[..., j]] for sc, _, has, _ in parts]
        lab = [lb[..., j][has[..., j]] for _, lb, has, _ in parts]
        n_gt = float(sum(p[3][j] for p in parts))
        aps[j] = _voc_ap(
            np.concatenate([np.zeros(0), *s]), np.concatenate([np.zeros(0, bool), *lab]), n_gt
        )
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
    from kpdiff.data.posetrack import detect_format, list_annotation_files, read_posetrack

    files = list_annotation_files(gt, split, "listing")
    if frames is None:
        frames = "labeled" if detect_format(files[0]) == "posetrack21" else "poseval"
    truth = read_posetrack(gt, split=split, schema=schema, order="listing")
    predictions = read_posetrack(pred, split=split, predictions=True, schema=schema)
    return posetrack_ap(truth, predictions, schema, threshold=threshold, frames=frames)
