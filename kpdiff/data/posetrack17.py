"""The PoseTrack17 (``annolist``) reader; the keypoint readings are those described in
:mod:`kpdiff.data.posetrack`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kpdiff.data.posetrack_json import (
    MISSING_SCORE,
    PathLike,
    check_flag,
    check_scalar,
    fail,
    frame_number,
    load_json,
)
from kpdiff.data.schemas import POSETRACK, KeypointSchema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation

__all__ = ["POSETRACK17_JOINTS", "read_posetrack17"]

POSETRACK17_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)  # fmt: skip
"""PoseTrack17 point ``id`` -> keypoint name (poseval calls ``head_bottom`` "neck")."""


def _read_person17(
    r: dict, schema: KeypointSchema, predictions: bool, path: PathLike, where: str
) -> PersonAnnotation:
    kp = np.zeros((schema.num_keypoints, 3), np.float64)
    head = None
    if any(k in r for k in ("x1", "y1", "x2", "y2")):
        head = np.array([check_scalar(r.get(k), path, where, k) for k in ("x1", "y1", "x2", "y2")])
    annopoints = r.get("annopoints") or []
    if isinstance(annopoints, dict):
        annopoints = [annopoints]
    if not isinstance(annopoints, list) or not isinstance(
        annopoints[0] if annopoints else {}, dict | None
    ):
        raise fail(path, where, "annopoints", "expected an object (or a list of one) with 'point'")
    points = (annopoints[0] or {}).get("point", []) if annopoints else []
    if not isinstance(points, list):
        raise fail(path, where, "annopoints", "expected a list of points")
    seen = set()
    present = np.zeros(schema.num_keypoints, bool)
    for p, pt in enumerate(points):
        pw = f"{where}, point {p}"
        jid = check_scalar(pt.get("id") if isinstance(pt, dict) else None, path, pw, "id", int)
        if not 0 <= jid < len(POSETRACK17_JOINTS):
            continue  # poseval ignores ids it does not know
        if jid in seen:
            raise fail(path, pw, "id", f"joint id {jid} appears twice in one person")
        seen.add(jid)
        name = POSETRACK17_JOINTS[jid]
        if name not in schema.keypoints:
            continue
        x, y = (check_scalar(pt.get(k), path, pw, k) for k in ("x", "y"))
        if predictions:
            s = pt.get("score")
            third = MISSING_SCORE if s is None else check_scalar(s, path, pw, "score")
        else:
            vis = pt.get("is_visible")
            third = 1.0 if vis is None else float(check_flag(vis, path, pw, "is_visible"))
        kp[schema.index(name)] = (x, y, third)
        present[schema.index(name)] = True  # a listed point is a joint, even (0, 0) with v = 0
    tid, score = r.get("track_id"), r.get("score")
    return PersonAnnotation(
        keypoints=kp,
        head_box=head,
        track_id=None if tid is None else check_scalar(tid, path, where, "track_id", int),
        score=None if score is None else check_scalar(score, path, where, "score"),
        present=present,
    )


def _read_regions17(entry: dict, path: PathLike, where: str) -> list[np.ndarray]:
    regions = entry.get("ignore_regions") or []
    out = []
    for r, reg in enumerate(regions if isinstance(regions, list) else [None]):
        pts = reg.get("point") if isinstance(reg, dict) else None
        if not isinstance(pts, list):
            raise fail(path, where, f"ignore_regions[{r}]", "expected {'point': [...]}")
        field = f"ignore_regions[{r}]"
        xy = [
            [check_scalar(p.get(k) if isinstance(p, dict) else None, path, where, field)
             for k in ("x", "y")]
            for p in pts
        ]  # fmt: skip
        out.append(np.asarray(xy, np.float64).reshape(-1, 2))
    return out


def read_posetrack17(
    path: PathLike, *, predictions: bool = False, schema: KeypointSchema = POSETRACK
) -> list[VideoAnnotation]:
    """Read one PoseTrack17 ``annolist`` file (one video, named after the file's stem).

    Head boxes come from ``x1, y1, x2, y2`` (already ``xyxy``); ``frame_index`` is ``imgnum − 1``
    when given, else the number in the image's file name, else the position. ``image_id`` is
    ``None``. Points with an ``id`` outside 0..14 are ignored, as poseval does.

    Args:
        path: the ``.json`` file.
        predictions: read point ``score`` values as the third keypoint value.
        schema: keypoint order of the result (default :data:`POSETRACK`).

    Raises:
        KpdiffInputError: unreadable JSON, no ``annolist``, an ill-typed field, a joint id twice.
    """
    return parse17(load_json(path), path, predictions, schema)


def parse17(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[VideoAnnotation]:
    """The videos of one parsed PoseTrack17 file (``data``, read from ``path``), checked as
    :func:`read_posetrack17` checks them."""
    annolist = data.get("annolist") if isinstance(data, dict) else None
    if not isinstance(annolist, list):
        raise fail(path, "top level", "annolist", "expected an object with an 'annolist' list")
    if not annolist:
        raise fail(path, "top level", "annolist", "expected at least one image (a video's frames)")
    frames = []
    for i, entry in enumerate(annolist):
        where = f"annolist[{i}]"
        image = entry.get("image") if isinstance(entry, dict) else None
        image = image[0] if isinstance(image, list) and image else image
        name = image.get("name") if isinstance(image, dict) else None
        if not isinstance(name, str):
            raise fail(path, where, "image", "expected [{'name': <image path>}]")
        rects = entry.get("annorect") or []
        if not isinstance(rects, list):
            raise fail(path, where, "annorect", "expected a list")
        persons = []
        for j, r in enumerate(rects):
            if not isinstance(r, dict):
                raise fail(path, f"{where}, annorect[{j}]", "annorect", "expected an object")
            persons.append(_read_person17(r, schema, predictions, path, f"{where}, annorect[{j}]"))
        imgnum, num = entry.get("imgnum"), frame_number(name)
        if imgnum is not None:
            index = check_scalar(imgnum, path, where, "imgnum", int) - 1
        else:
            index = i if num is None else num
        labeled = entry.get("is_labeled")
        frames.append(
            FrameAnnotation(
                image_path=name,
                frame_index=index,
                is_labeled=bool(
                    persons if labeled is None else check_flag(labeled, path, where, "is_labeled")
                ),
                persons=persons,
                ignore_regions=_read_regions17(entry, path, where),
            )
        )
    return [VideoAnnotation(name=Path(path).stem, frames=frames)]
