"""Track ids across frames: people matched frame to frame by box overlap.

A video's poses get stable ``track_id``s, so that PoseTrack-format output carries real tracks
and an overlay's colours follow people. The association is the classic IoU tracker with an
optimal assignment (``scipy.optimize.linear_sum_assignment``, the Hungarian method, on
``1 − IoU``): scipy is already a dependency, the boxes come from the user's detector (there is
no motion model to fit), and a person missed for a few frames keeps its id.

    tracker = IoUTracker()
    for boxes in boxes_per_frame:          # [N, 4] xywh per frame, in frame order
        ids = tracker.update(boxes)        # [N] int64, stable across frames
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
    maximising the total IoU; a pair with IoU below ``min_iou`` is not a match. Unmatched boxes
    start new tracks (ids 0, 1, 2, … in order of appearance). A track's box is its last match.

    Args:
        min_iou: smallest IoU of a match. Default ``0.3``.
        max_missed: frames a track survives without a match. Default ``5``.
    """

    min_iou: float = 0.3
    max_missed: int = 5
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise KpdiffInputError(f"min_iou: expected a number in (0, 1], got {self.min_iou!r}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int):
            raise KpdiffInputError(f"max_missed: expected an integer, got {self.max_missed!r}")
        if self.max_missed < 0:
            raise KpdiffInputError(f"max_missed: expected >= 0, got {self.max_missed}")

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """The track ids of one frame's boxes (``[N, 4]`` ``xywh``, finite); returns ``[N]``
        int64 ids, distinct within the frame. Call once per frame, in frame order (also for a
        frame without boxes: ``np.zeros((0, 4))``)."""
        boxes = np.asarray(boxes, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise KpdiffInputError(
                f"boxes: expected a finite [N, 4] xywh array, got shape {list(boxes.shape)}"
            )
        ids = np.full(len(boxes), -1, np.int64)
        if self._tracks and len(boxes):
            iou = box_iou(boxes, np.stack([t.box for t in self._tracks]))
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.min_iou:
                    track = self._tracks[c]
                    ids[r], track.box, track.missed = track.id, boxes[r], -1
        for track in self._tracks:
            track.missed += 1  # matched ones are back at 0
        for r in np.flatnonzero(ids < 0):
            ids[r] = self._next
            self._tracks.append(_Track(self._next, boxes[r]))
            self._next += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return ids
