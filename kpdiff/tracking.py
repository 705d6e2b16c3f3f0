"""Track ids across frames: people matched frame to frame by box overlap.

A video's poses get stable ``track_id``s, so that PoseTrack-format output carries real tracks
and an overlay's colours follow people. The association is the classic IoU tracker with an
optimal assignment (``scipy.optimize.linear_sum_assignment``, the Hungarian method, on
``1 − IoU``): scipy is already a dependency, the boxes come from the user's detector (there is
no motion model to fit), and a person missed for a few frames keeps its id.

Two ideas of ByteTrack (Zhang et al., ECCV 2022) keep duplicate and false-positive boxes from
stealing a person's id: confident boxes are matched first and to the tracks seen on the previous
frame first, then to older tracks; a box below ``high_score`` may continue a track seen on the
previous frame but never starts one (it gets an id of its own for this frame only).

    tracker = IoUTracker()
    for boxes, scores in per_frame:        # [N, 4] xywh and [N] scores, in frame order
        ids = tracker.update(boxes, scores)  # [N] int64, stable across frames
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from kpdiff.errors import KpdiffInputError

__all__ = ["IoUTracker", "box_iou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of ``a [N, 4]`` and ``b [M, 4]`` ``xywh`` boxes.

    Returns ``[N, M]`` float64 in ``[0, 1]`` (0 for boxes of zero area).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    missed: int = 0


@dataclass
class IoUTracker:
    """Frame-to-frame association of person boxes by overlap.

    Each frame's boxes are assigned to the tracks alive (seen within ``max_missed`` frames) by
    maximising the total IoU, in stages: boxes scoring ``>= high_score`` to the tracks seen on
    the previous frame, then to older tracks, then the other boxes to the previous frame's
    tracks left; a pair with IoU below ``min_iou`` is not a match. Unmatched confident boxes
    start new tracks (ids 0, 1, 2, … in order of appearance); unmatched other boxes get a new
    id that no later frame continues. A track's box is its last match.

    Args:
        min_iou: smallest IoU of a match. Default ``0.3``.
        max_missed: frames a track survives without a match. Default ``5``.
        high_score: boxes scoring at least this are confident. Default ``0.5``.
    """

    min_iou: float = 0.3
    max_missed: int = 5
    high_score: float = 0.5
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise KpdiffInputError(f"min_iou: expected a number in (0, 1], got {self.min_iou!r}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int):
            raise KpdiffInputError(f"max_missed: expected an integer, got {self.max_missed!r}")
        if self.max_missed < 0:
            raise KpdiffInputError(f"max_missed: expected >= 0, got {self.max_missed}")
        if not isinstance(self.high_score, int | float) or not 0 <= self.high_score <= 1:
            raise KpdiffInputError(
                f"high_score: expected a number in [0, 1], got {self.high_score!r}"
            )

    def update(self, boxes: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """The track ids of one frame's boxes; call once per frame, in frame order (also for a
        frame without boxes: ``np.zeros((0, 4))``).

        Args:
            boxes: ``[N, 4]`` ``xywh``, finite.
            scores: ``[N]`` box scores in ``[0, 1]``. Default ``None``: all confident.

        Returns:
            ``[N]`` int64 ids, distinct within the frame.
        """
        boxes = np.asarray(boxes, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise KpdiffInputError(
                f"boxes: expected a finite [N, 4] xywh array, got shape {list(boxes.shape)}"
            )
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)
        if scores.shape != (len(boxes),) or not np.isfinite(scores).all():
            raise KpdiffInputError(
                f"scores: expected {len(boxes)} finite numbers, got shape {list(scores.shape)}"
            )
        ids = np.full(len(boxes), -1, np.int64)
        high = scores >= self.high_score
        recent = np.array([t.missed == 0 for t in self._tracks], bool)
        used = np.zeros(len(self._tracks), bool)
        for box_set, track_set in ((high, recent), (high, ~recent), (~high, recent)):
            self._match(boxes, box_set & (ids < 0), track_set & ~used, ids, used)
        for track in self._tracks:
            track.missed += 1  # matched ones are back at 0
        for r in np.flatnonzero(ids < 0):
            ids[r] = self._next
            if high[r]:
                self._tracks.append(_Track(self._next, boxes[r]))
            self._next += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return ids

    def _match(
        self,
        boxes: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        ids: np.ndarray,
        used: np.ndarray,
    ) -> None:
        """Assign the boxes ``rows`` (a mask) to the tracks ``cols`` (a mask) by total IoU."""
        r_idx, c_idx = np.flatnonzero(rows), np.flatnonzero(cols)
        if not len(r_idx) or not len(c_idx):
            return
        iou = box_iou(boxes[r_idx], np.stack([self._tracks[c].box for c in c_idx]))
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[r, c] >= self.min_iou:
                track = self._tracks[c_idx[c]]
                ids[r_idx[r]], track.box, track.missed = track.id, boxes[r_idx[r]], -1
                used[c_idx[c]] = True
