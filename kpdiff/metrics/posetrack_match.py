"""The PoseTrack AP's matching: poseval's head-size PCKh and its prediction-to-person assignment.

Step 4 of :mod:`kpdiff.metrics.posetrack_ap`'s protocol: per frame, the distance of every
predicted joint to every ground-truth joint in head sizes (:func:`head_size`), the PCKh of every
(prediction, person) pair, and poseval's greedy assignment; :func:`match` labels every predicted
joint of an :class:`~kpdiff.metrics.posetrack_set.EvaluatedSet` a true or a false positive,
vectorised over the frames that hold the same numbers of persons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kpdiff.metrics.posetrack_set import EvaluatedSet

__all__ = ["head_size", "match"]

_HEAD_FACTOR = 0.6  # headSize = 0.6 × head-box diagonal
_CHUNK_ELEMS = 1 << 22  # frames are matched in chunks of at most this many [P, G, J] cells


def head_size(head_box: np.ndarray) -> float:
    """poseval's headSize of a head box ``[4]`` ``xyxy``: 0.6 × its diagonal (pixels), with
    poseval's own arithmetic (``np.linalg.norm``), so that a joint on the threshold is judged as
    poseval judges it. A joint is correct within
    :data:`~kpdiff.metrics.posetrack_ap.PCKH_THRESHOLD` × this."""
    x0, y0, x1, y1 = (float(v) for v in head_box)
    return _HEAD_FACTOR * float(np.linalg.norm(np.subtract([x1, y1], [x0, y0])))


def _head_sizes(boxes: np.ndarray) -> np.ndarray:
    """``[...]`` head sizes of ``[..., 4]`` boxes, vectorised: equal to :func:`head_size` up to
    the last bit, which only matters on the threshold (re-judged there with poseval's own call)."""
    d = boxes[..., 2:] - boxes[..., :2]
    return _HEAD_FACTOR * np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)


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


def match(s: EvaluatedSet, thr: float) -> np.ndarray:
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
