"""The evaluated set of the PoseTrack AP: videos paired, frames checked and kept, ignore regions.

:func:`gather` pairs the ground-truth and prediction videos by name and their frames by position,
runs poseval's checks (image ids, track ids, keypoints, head boxes, ignore regions; the first
failing one, in poseval's reading order, is raised naming the video and the frame), keeps the
evaluated frames (steps 1 to 3 of :mod:`kpdiff.metrics.posetrack_ap`'s protocol) and flattens
them into an :class:`EvaluatedSet`. A video is read either from a
:class:`~kpdiff.data.structures.VideoAnnotation` (:class:`ObjectVideo`) or from the arrays the
PoseTrack18/21 reader fills (:class:`TableVideo`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from kpdiff.data.schemas import KeypointSchema
from kpdiff.data.structures import PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError

if TYPE_CHECKING:
    from kpdiff.data.posetrack18 import VideoTable

__all__ = ["EvaluatedSet", "ObjectVideo", "TableVideo", "Video", "WhereFn", "gather"]

WhereFn = Callable[[int], str]  # frame position -> "video 'name', frame i (image path)"


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


class ObjectVideo:
    """A :class:`VideoAnnotation` as the metric reads a video (see :class:`TableVideo`)."""

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


class TableVideo:
    """A video read straight into arrays (:class:`kpdiff.data.posetrack18.VideoTable`).

    Attributes (both kinds of video): ``name``; ``paths [T]``, ``image_ids [T]``, ``labeled [T]``
    bool, ``n_persons [T]``; ``regions``: frame -> ignore polygons; ``duplicate_tracks()``;
    ``persons(frames, K, gt, where)`` -> :class:`_Persons`.
    """

    def __init__(self, table: VideoTable) -> None:
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


Video = ObjectVideo | TableVideo
"""One video of one side, as the metric reads it."""


@dataclass
class EvaluatedSet:
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
    video: Video, frames: np.ndarray, k: int, gt: bool, where: WhereFn, errors: list
) -> _Persons:
    """``video.persons(frames)``, or those of the frames before the first bad one (whose error
    goes to ``errors``), so that the checks of the frames before it still run."""
    while True:
        try:
            return video.persons(frames, k, gt, where)
        except _FrameError as e:
            errors.append((*e.key, e.error))
            frames = frames[frames < e.key[0]]


def gather(
    gt: Sequence[Video], pred: Sequence[Video], sch: KeypointSchema, labeled_only: bool
) -> EvaluatedSet:
    """Pair videos by name and frames by position, check them, keep the evaluated frames."""
    by_name: dict[str, Video] = {}
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

        def where(i: int, gv: Video = gv) -> str:
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
    s = EvaluatedSet(
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


def _apply_regions(s: EvaluatedSet, polygons: list[tuple[int, shapely.Polygon]]) -> None:
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
