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

import gc
import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import shapely

from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

if TYPE_CHECKING:
    from kpdiff.data.posetrack18 import _VideoTable

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
_CHUNK_ELEMS = 1 << 22  # frames are matched in chunks of at most this many [P, G, J] cells

WhereFn = Callable[[int], str]  # frame position -> "video 'name', frame i (image path)"


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


def head_size(head_box: np.ndarray) -> float:
    """poseval's headSize of a head box ``[4]`` ``xyxy``: 0.6 × its diagonal (pixels), with
    poseval's own arithmetic (``np.linalg.norm``), so that a joint on the threshold is judged as
    poseval judges it. A joint is correct within :data:`PCKH_THRESHOLD` × this."""
    x0, y0, x1, y1 = (float(v) for v in head_box)
    return _HEAD_FACTOR * float(np.linalg.norm(np.subtract([x1, y1], [x0, y0])))


def _head_sizes(boxes: np.ndarray) -> np.ndarray:
    """``[...]`` head sizes of ``[..., 4]`` boxes, vectorised: equal to :func:`head_size` up to
    the last bit, which only matters on the threshold (re-judged there with poseval's own call)."""
    d = boxes[..., 2:] - boxes[..., :2]
    return _HEAD_FACTOR * np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)


@dataclass
class _Persons:
    """Persons of some frames of one video (one side), in frame order; ``K`` schema joints."""

    frame: np.ndarray  # [N] int64 frame position in the video, non-decreasing
    kp: np.ndarray  # [N, K, 3] float64
    has: np.ndarray  # [N, K] bool
    head: np.ndarray | None  # [N, 4] xyxy, NaN rows where none (ground truth only)
    head_error: tuple[int, int, KpdiffInputError] | None = None  # (frame, person, error)


class _FrameError(Exception):
    """A check failed on frame ``frame``: ``(frame, rank, sub)`` orders it among the others
    (the order in which poseval's frame-by-frame reading would meet them)."""

    def __init__(self, frame: int, rank: int, sub: int, error: KpdiffInputError) -> None:
        super().__init__(frame, rank, sub, error)
        self.key, self.error = (int(frame), rank, int(sub)), error


# Order of the checks within one frame (the first failing one is reported).
_IDS, _GT_TRACKS, _PR_TRACKS, _GT_KEYPOINTS, _PR_KEYPOINTS, _HEAD, _REGION = range(7)


def _first_duplicate(frame: np.ndarray, tids: Sequence[int | None]) -> tuple[int, list] | None:
    """``(frame, sorted duplicated ids)`` of the first frame where two persons share a track id,
    ``None`` when none does; ``frame [N]`` is non-decreasing."""
    try:
        t = np.asarray(tids, np.int64).reshape(-1)  # fails on None or beyond 64 bits
    except (TypeError, ValueError, OverflowError):
        t = None
    if t is not None:
        order = np.lexsort((t, frame))
        f, t = frame[order], t[order]
        same = (f[1:] == f[:-1]) & (t[1:] == t[:-1])
        if not same.any():
            return None
        first = int(f[1:][same][0])
        return first, sorted(set(t[1:][same & (f[1:] == first)].tolist()))
    starts = np.searchsorted(frame, np.unique(frame))
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(frame)], strict=True):
        ids = [x for x in tids[a:b] if x is not None]
        if len(set(ids)) != len(ids):
            return int(frame[a]), sorted({x for x in ids if ids.count(x) > 1})
    return None


class _ObjectVideo:
    """A :class:`VideoAnnotation` as the metric reads a video (see :class:`_TableVideo`)."""

    def __init__(self, video: VideoAnnotation) -> None:
        self.video, self.name = video, video.name
        self.paths = [f.image_path for f in video.frames]
        self.image_ids = [f.image_id for f in video.frames]
        self.labeled = np.array([bool(f.is_labeled) for f in video.frames], bool).reshape(-1)
        self.n_persons = np.array([len(f.persons) for f in video.frames], np.int64).reshape(-1)
        self.regions = {i: f.ignore_regions for i, f in enumerate(video.frames) if f.ignore_regions}

    def duplicate_tracks(self) -> tuple[int, list] | None:
        for i, f in enumerate(self.video.frames):
            ids = [p.track_id for p in f.persons if p.track_id is not None]
            if len(set(ids)) != len(ids):
                return i, sorted({t for t in ids if ids.count(t) > 1})
        return None

    def persons(self, frames: np.ndarray, k: int, gt: bool, where: WhereFn) -> _Persons:
        """The persons of ``frames`` (sorted positions); :class:`_FrameError` names the first
        frame whose keypoints (or, for ground truth, head boxes) are malformed."""
        side, rank = (", ground truth", _GT_KEYPOINTS) if gt else (", prediction", _PR_KEYPOINTS)
        fr = self.video.frames
        persons = [p for i in frames.tolist() for p in fr[i].persons]
        frame = np.repeat(frames, self.n_persons[frames])
        try:
            kp, has = _stack(persons, k, "")
        except KpdiffInputError:  # find the first bad frame, or stack frame by frame
            parts = []
            for i in frames.tolist():
                try:
                    parts.append(_stack(fr[i].persons, k, where(i) + side))
                except KpdiffInputError as e:
                    raise _FrameError(i, rank, 0, e) from None
            kp = np.concatenate([p[0] for p in parts]).reshape(-1, k, 3)
            has = np.concatenate([p[1] for p in parts]).reshape(-1, k)
        if not gt:
            return _Persons(frame, kp, has, None)
        head, error = np.full((len(persons), 4), np.nan), None
        boxes = [p.head_box for p in persons]
        fast = None
        if not any(b is None for b in boxes):
            try:
                fast = np.asarray(boxes, np.float64)
            except (TypeError, ValueError):
                fast = None
        if fast is not None and fast.shape == (len(boxes), 4):
            ok = np.isfinite(fast).all(axis=1)
            head[ok] = fast[ok]
            bad = np.flatnonzero(~ok).tolist()
        else:
            bad = []
            for n, b in enumerate(boxes):
                if b is not None:
                    b = np.asarray(b, np.float64)
                    if b.shape != (4,) or not np.isfinite(b).all():
                        bad.append(n)
                        break
                    head[n] = b
        if bad:
            n = bad[0]
            i, m = int(frame[n]), n - int(np.searchsorted(frame, frame[n]))
            msg = f"{where(i)}{side}, person {m}: head_box must be 4 finite numbers"
            error = (i, m, KpdiffInputError(msg))
        return _Persons(frame, kp, has, head, error)


class _TableVideo:
    """A video read straight into arrays (:class:`kpdiff.data.posetrack18._VideoTable`).

    Attributes (both kinds of video): ``name``; ``paths [T]``, ``image_ids [T]``, ``labeled [T]``
    bool, ``n_persons [T]``; ``regions``: frame -> ignore polygons; ``duplicate_tracks()``;
    ``persons(frames, K, gt, where)`` -> :class:`_Persons`.
    """

    def __init__(self, table: _VideoTable) -> None:
        self.t, self.name = table, table.name
        self.paths, self.image_ids, self.labeled = table.paths, table.image_ids, table.labeled
        self.n_persons = np.bincount(table.frame, minlength=len(table.paths))
        self.regions = table.regions

    def duplicate_tracks(self) -> tuple[int, list] | None:
        return _first_duplicate(self.t.frame, self.t.track_id)

    def persons(self, frames: np.ndarray, k: int, gt: bool, where: WhereFn) -> _Persons:
        t = self.t
        if len(frames) == len(self.paths):
            return _Persons(t.frame, t.keypoints, t.present, t.head_box if gt else None)
        wanted = np.zeros(len(self.paths), bool)
        wanted[frames] = True
        sel = np.flatnonzero(wanted[t.frame])
        head = t.head_box[sel] if gt else None
        return _Persons(t.frame[sel], t.keypoints[sel], t.present[sel], head)


_Video = _ObjectVideo | _TableVideo
"""One video of one side, as the metric reads it."""


@dataclass
class _Set:
    """Every evaluated frame of a set, flattened; ``J`` evaluated joints, ``F`` frames.

    Persons are in frame order (videos in ground-truth order, frames in video order, persons
    in file order), which is the order poseval ranks equal scores in.
    """

    n_frames: int  # F
    gt_frame: np.ndarray  # [G] int64 frame of each GT person, non-decreasing
    gt_xy: np.ndarray  # [G, J, 2]
    gt_has: np.ndarray  # [G, J] bool (ignore regions applied)
    head_box: np.ndarray  # [G, 4] xyxy (NaN: none, and no joint needs one)
    pr_frame: np.ndarray  # [P] int64
    pr_xy: np.ndarray  # [P, J, 2]
    pr_has: np.ndarray  # [P, J] bool (ignore regions applied)
    pr_score: np.ndarray  # [P, J]


def _checked(
    video: _Video, frames: np.ndarray, k: int, gt: bool, where: WhereFn, errors: list
) -> _Persons:
    """``video.persons(frames)``, or those of the frames before the first bad one (whose error
    goes to ``errors``), so that the checks of the frames before it still run."""
    while True:
        try:
            return video.persons(frames, k, gt, where)
        except _FrameError as e:
            errors.append((*e.key, e.error))
            frames = frames[frames < e.key[0]]


def _gather(
    gt: Sequence[_Video], pred: Sequence[_Video], sch: KeypointSchema, labeled_only: bool
) -> _Set:
    """Pair videos by name and frames by position, check them, keep the evaluated frames."""
    by_name: dict[str, _Video] = {}
    for v in pred:
        if v.name in by_name:
            raise KpdiffInputError(f"predictions: video {v.name!r} appears twice")
        by_name[v.name] = v
    ev, k = np.asarray(sch.evaluated, np.int64), sch.num_keypoints
    g_parts: list[tuple[np.ndarray, ...]] = []
    p_parts: list[tuple[np.ndarray, ...]] = []
    polygons: list[tuple[int, shapely.Polygon]] = []  # (set frame, polygon)
    seen: set[str] = set()
    offset = 0
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
        if len(pv.paths) != len(gv.paths):
            raise KpdiffInputError(
                f"video {gv.name!r}: prediction has {len(pv.paths)} frames, ground truth "
                f"{len(gv.paths)} (a prediction file must hold every frame of its GT file)"
            )

        def where(i: int, gv: _Video = gv) -> str:
            return f"video {gv.name!r}, frame {i} ({gv.paths[i]})"

        errors: list[tuple[int, int, int, KpdiffInputError]] = []
        if gv.image_ids != pv.image_ids:
            for i, (a, b) in enumerate(zip(gv.image_ids, pv.image_ids, strict=True)):
                if a is not None and b is not None and a != b:
                    errors.append((i, _IDS, 0, KpdiffInputError(
                        f"{where(i)}: prediction image id {b} != ground-truth image id {a} "
                        "(frames are paired by position, as in poseval)"
                    )))  # fmt: skip
                    break
        for side, rank, video in (("ground truth", _GT_TRACKS, gv), ("prediction", _PR_TRACKS, pv)):
            dup = video.duplicate_tracks()
            if dup is not None:
                msg = f"{where(dup[0])}, {side}: duplicate track ids {dup[1]}"
                errors.append((dup[0], rank, 0, KpdiffInputError(msg)))
        keep = gv.n_persons > 0
        if labeled_only:
            keep &= gv.labeled
        frames = np.flatnonzero(keep)
        g = _checked(gv, frames, k, True, where, errors)
        p = _checked(pv, frames, k, False, where, errors)
        g_has, p_has = g.has[:, ev], p.has[:, ev]
        if g.head_error is not None:
            errors.append((g.head_error[0], _HEAD, *g.head_error[1:]))
        missing = np.flatnonzero(g_has.any(axis=1) & np.isnan(g.head[:, 0]))
        if missing.size:
            n = int(missing[0])
            i = int(g.frame[n])
            m = n - int(np.searchsorted(g.frame, i))
            errors.append((i, _HEAD, m, KpdiffInputError(
                f"{where(i)}, ground truth, person {m}: head_box is missing; the PoseTrack AP "
                "needs each ground-truth person's head box as its reference size (a joint is "
                "correct within threshold × 0.6 × its diagonal; PoseTrack18 'bbox_head', "
                "PoseTrack17 x1/y1/x2/y2). A body without a head needs a box of the size that "
                "sets that tolerance; the synthetic generator draws it from FigureRig.head "
                "(see 'The reference size of other bodies' in docs/data.md)"
            )))  # fmt: skip
        for i in sorted(r for r in gv.regions if keep[r]):  # checked even without joints
            at = offset + int(np.searchsorted(frames, i))  # the frame's position in the set
            try:
                polygons += [
                    (at, _polygon(reg, r, where(i))) for r, reg in enumerate(gv.regions[i])
                ]
            except _FrameError as e:
                errors.append((i, *e.key[1:], e.error))
                break
        if errors:
            raise min(errors, key=lambda e: e[:3])[3]
        g_parts.append((offset + np.searchsorted(frames, g.frame), g.kp[:, ev], g_has, g.head))
        p_parts.append((offset + np.searchsorted(frames, p.frame), p.kp[:, ev], p_has))
        offset += len(frames)
    if not offset:
        raise KpdiffInputError(
            "ground truth: no frame to evaluate (no frame lists a person"
            + (", or none of those is labelled" if labeled_only else "")
            + f"; {sum(len(v.paths) for v in gt)} frames in {len(gt)} videos): the AP is undefined"
        )
    g_kp = np.concatenate([x[1] for x in g_parts])
    p_kp = np.concatenate([x[1] for x in p_parts])
    s = _Set(
        n_frames=offset,
        gt_frame=np.concatenate([x[0] for x in g_parts]),
        gt_xy=g_kp[..., :2],
        gt_has=np.concatenate([x[2] for x in g_parts]),
        head_box=np.concatenate([x[3] for x in g_parts]),
        pr_frame=np.concatenate([x[0] for x in p_parts]),
        pr_xy=p_kp[..., :2],
        pr_has=np.concatenate([x[2] for x in p_parts]),
        pr_score=p_kp[..., 2],
    )
    _apply_regions(s, polygons)
    return s


def _polygon(region: Any, r: int, where: str) -> shapely.Polygon:
    try:
        return shapely.Polygon(np.asarray(region, np.float64).reshape(-1, 2))
    except (ValueError, shapely.errors.GEOSException) as e:
        msg = f"{where}: ignore region {r} is not a polygon ({e})"
        raise _FrameError(0, _REGION, r, KpdiffInputError(msg)) from None


def _apply_regions(s: _Set, polygons: list[tuple[int, shapely.Polygon]]) -> None:
    """Remove the joints strictly inside an ignore polygon of their frame (``shapely``
    ``contains``: a point on the boundary stays), GT and predictions alike, in place."""
    if not polygons:
        return
    poly_frame = np.array([f for f, _ in polygons], np.int64)
    geoms = np.empty(len(polygons), object)
    geoms[:] = [p for _, p in polygons]
    bounds = shapely.bounds(geoms)  # [R, 4]; NaN for an empty polygon, which holds nothing
    for frame, xy, has in ((s.gt_frame, s.gt_xy, s.gt_has), (s.pr_frame, s.pr_xy, s.pr_has)):
        lo = np.searchsorted(frame, poly_frame, "left")
        cnt = np.searchsorted(frame, poly_frame, "right") - lo  # persons of each polygon's frame
        region = np.repeat(np.arange(len(polygons)), cnt)
        person = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt - lo, cnt)
        m, joint = np.nonzero(has[person])
        region, person = region[m], person[m]
        pts, b = xy[person, joint], bounds[region]
        # A point inside a polygon lies inside its bounding box (GEOS tests that first too).
        near = (b[:, 0] <= pts[:, 0]) & (pts[:, 0] <= b[:, 2])
        near &= (b[:, 1] <= pts[:, 1]) & (pts[:, 1] <= b[:, 3])
        near = np.flatnonzero(near)
        inside = shapely.contains(geoms[region[near]], shapely.points(pts[near]))
        has[person[near[inside]], joint[near[inside]]] = False  # not contains_xy: unprepared


def _match_frames(
    pr_xy: np.ndarray,
    pr_has: np.ndarray,
    gt_xy: np.ndarray,
    gt_has: np.ndarray,
    box: np.ndarray,
    thr: float,
) -> np.ndarray:
    """poseval's assignment, vectorised over ``F`` frames that each hold ``P`` predictions and
    ``G`` ground-truth persons: ``pr_xy [F, P, J, 2]``, ``pr_has [F, P, J]``, ``gt_xy [F, G, J,
    2]``, ``gt_has [F, G, J]``, head boxes ``box [F, G, 4]``. Returns ``label [F, P, J]`` bool:
    the joint's detection is a true positive."""
    P, G = pr_xy.shape[1], gt_xy.shape[1]
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
    return label & matched[..., None]


def _runs(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[sum(counts)]`` int64: the index ranges ``starts[i] .. starts[i] + counts[i]`` joined."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - counts), counts)


def _match(s: _Set, thr: float) -> np.ndarray:
    """``label [P, J]`` bool of every predicted joint: frames are matched in groups of equal
    person counts (no padding), at most :data:`_CHUNK_ELEMS` ``[P, G, J]`` cells at a time."""
    J = s.gt_has.shape[1]
    n_g = np.bincount(s.gt_frame, minlength=s.n_frames)
    n_p = np.bincount(s.pr_frame, minlength=s.n_frames)
    g0, p0 = np.cumsum(n_g) - n_g, np.cumsum(n_p) - n_p  # first person of each frame
    key = n_p * (n_g.max() + 1) + n_g
    order = np.argsort(key, kind="stable")  # frames, grouped by person counts
    n_g, n_p = n_g[order], n_p[order]
    pr, gt = (
        _runs(p0[order], n_p),
        _runs(g0[order], n_g),
    )  # persons in that order: groups are slices
    pr_xy, pr_has = s.pr_xy[pr], s.pr_has[pr]
    gt_xy, gt_has, box = s.gt_xy[gt], s.gt_has[gt], s.head_box[gt]
    label = np.zeros(pr_has.shape, bool)
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    p_at = np.concatenate([[0], np.cumsum(n_p)])  # first person of each (reordered) frame
    g_at = np.concatenate([[0], np.cumsum(n_g)])
    for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(order)], strict=True):
        P, G = int(n_p[a]), int(n_g[a])
        if P == 0 or G == 0:
            continue
        step = max(1, _CHUNK_ELEMS // (P * G * J))
        for c in range(a, b, step):
            e = min(c + step, b)
            ps, gs = slice(p_at[c], p_at[e]), slice(g_at[c], g_at[e])
            label[ps] = _match_frames(
                pr_xy[ps].reshape(e - c, P, J, 2),
                pr_has[ps].reshape(e - c, P, J),
                gt_xy[gs].reshape(e - c, G, J, 2),
                gt_has[gs].reshape(e - c, G, J),
                box[gs].reshape(e - c, G, 4),
                thr,
            ).reshape(-1, J)
    out = np.empty_like(label)
    out[pr] = label
    return out


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
    evaluated = _gather(
        [_ObjectVideo(v) for v in gt],
        [_ObjectVideo(v) for v in pred],
        sch,
        labeled_only=frames == "labeled",
    )
    return _result(evaluated, sch, threshold)


def _result(s: _Set, sch: KeypointSchema, threshold: float) -> PoseTrackAP:
    """Match every frame of ``s``, then the per-joint VOC APs and the columns."""
    names = [sch.keypoints[j] for j in sch.evaluated]
    label = _match(s, threshold)  # [P, J]
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
    from kpdiff.data.posetrack import _format_of, _read_files, list_annotation_files
    from kpdiff.data.posetrack17 import _parse17
    from kpdiff.data.posetrack18 import _video_tables18
    from kpdiff.data.posetrack_json import _load_json

    sch = get_schema(schema)
    files = list_annotation_files(gt, split, "listing")
    formats: list[str] = []

    def reader(predictions: bool):
        def read(f: Path) -> list[_Video]:  # a file at a time: its JSON is dropped once read
            data = _load_json(f)
            formats.append(_format_of(data, f))
            if formats[-1] == "posetrack17":
                return [_ObjectVideo(v) for v in _parse17(data, f, predictions, sch)]
            return [_TableVideo(t) for t in _video_tables18(data, f, predictions, sch)]

        return read

    gc_was_on = gc.isenabled()
    gc.disable()  # parsed JSON is millions of acyclic objects: collecting them finds nothing
    try:
        truth = _read_files(files, reader(False))
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
        predictions = _read_files(pred_files, reader(True))
    finally:
        if gc_was_on:
            gc.enable()
    evaluated = _gather(truth, predictions, sch, labeled_only=frames == "labeled")
    return _result(evaluated, sch, threshold)
