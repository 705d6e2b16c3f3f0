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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

__all__ = ["PCKH_THRESHOLD", "PoseTrackAP", "head_size", "posetrack_ap"]

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
    head: np.ndarray  # [G] head sizes
    pr_xy: np.ndarray  # [P, J, 2]
    pr_has: np.ndarray  # [P, J] bool
    pr_score: np.ndarray  # [P, J]


def _stack(persons: list[PersonAnnotation], k: int, where: str) -> np.ndarray:
    """``[N, K, 3]`` float64 keypoints of ``persons``; errors name the offending person."""
    if not persons:
        return np.zeros((0, k, 3))
    try:
        kp = np.asarray([p.keypoints for p in persons], np.float64).reshape(len(persons), -1, 3)
        ok = kp.shape[1] == k and bool(np.isfinite(kp).all())
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
        raise KpdiffInputError(f"{where}: keypoints must be finite [{k}, 3] arrays")
    return kp


def _check_tracks(persons: list[PersonAnnotation], where: str) -> None:
    ids = [p.track_id for p in persons if p.track_id is not None]
    if len(set(ids)) != len(ids):
        dup = sorted({t for t in ids if ids.count(t) > 1})
        raise KpdiffInputError(f"{where}: duplicate track ids {dup}")


def head_size(head_box: np.ndarray) -> float:
    """poseval's headSize of a head box ``[4]`` ``xyxy``: 0.6 × its diagonal (pixels). A joint
    is correct within :data:`PCKH_THRESHOLD` × this."""
    x0, y0, x1, y1 = (float(v) for v in head_box)
    return _HEAD_FACTOR * math.hypot(x1 - x0, y1 - y0)


def _head_sizes(persons: list[PersonAnnotation], needed: np.ndarray, where: str) -> np.ndarray:
    sizes = np.zeros(len(persons))
    for n, p in enumerate(persons):
        if p.head_box is None:
            if needed[n]:
                raise KpdiffInputError(f"{where}, person {n}: head_box is missing")
            continue
        b = np.asarray(p.head_box, np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise KpdiffInputError(f"{where}, person {n}: head_box must be 4 finite numbers")
        sizes[n] = head_size(b)
    return sizes


def _inside(frame: FrameAnnotation, xy: np.ndarray, where: str) -> np.ndarray:
    """``[N]`` bool: points strictly inside one of the frame's ignore polygons."""
    out = np.zeros(len(xy), bool)
    for r, region in enumerate(frame.ignore_regions):
        try:
            poly = shapely.Polygon(np.asarray(region, np.float64).reshape(-1, 2))
        except (ValueError, shapely.errors.GEOSException) as e:
            raise KpdiffInputError(f"{where}: ignore region {r} is not a polygon ({e})") from None
        out |= shapely.contains_xy(poly, xy[:, 0], xy[:, 1])
    return out


def _frame(gt: FrameAnnotation, pr: FrameAnnotation, sch: KeypointSchema, where: str) -> _Frame:
    ev, k = list(sch.evaluated), sch.num_keypoints
    g = _stack(gt.persons, k, where + ", ground truth")[:, ev]
    p = _stack(pr.persons, k, where + ", prediction")[:, ev]
    g_has, p_has = g.any(axis=2), p.any(axis=2)  # absent = (0, 0, 0)
    head = _head_sizes(gt.persons, g_has.any(axis=1), where + ", ground truth")
    if gt.ignore_regions and (g_has.any() or p_has.any()):
        inside = _inside(gt, np.concatenate([g[..., :2], p[..., :2]]).reshape(-1, 2), where)
        g_has &= ~inside[: g_has.size].reshape(g_has.shape)
        p_has &= ~inside[g_has.size :].reshape(p_has.shape)
    return _Frame(g[..., :2], g_has, head, p[..., :2], p_has, p[..., 2])


def _collect(
    gt: Sequence[VideoAnnotation], pred: Sequence[VideoAnnotation], sch: KeypointSchema
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
            if gf.is_labeled and gf.persons:
                frames.append(_frame(gf, pf, sch, where))
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
    score, head = np.zeros((F, P, J)), np.ones((F, G))
    for n, f in enumerate(chunk):  # padding rows have no joints, so they never match
        p, g = f.pr_has.shape[0], f.gt_has.shape[0]
        pr_xy[n, :p], pr_has[n, :p], score[n, :p] = f.pr_xy, f.pr_has, f.pr_score
        gt_xy[n, :g], gt_has[n, :g], head[n, :g] = f.gt_xy, f.gt_has, f.head
    n_gt = gt_has.sum(axis=(0, 1))
    if P == 0 or G == 0:
        return score, np.zeros_like(pr_has), pr_has, n_gt
    diff = pr_xy[:, :, None] - gt_xy[:, None]  # [F, P, G, J, 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # zero head size: never a match
        dist = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2) / head[:, None, :, None]
    correct = (dist <= thr) & pr_has[:, :, None] & gt_has[:, None]  # [F, P, G, J]
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
    frames = _collect(gt, pred, sch)
    parts: list[tuple[np.ndarray, ...]] = [_match_chunk(c, threshold) for c in _chunks(frames)]
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
