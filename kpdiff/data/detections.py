"""Precomputed person-detector boxes, as the top-down pipeline uses them at validation time.

Two JSON layouts are read, both a list of records with an ``xywh`` ``bbox`` and a ``score``:

- DCPose: ``{"image_name": "images/val/<video>/000012.jpg", "bbox": [x, y, w, h], "score": s}``,
  keyed by the image's last two path parts (``"<video>/000012.jpg"``);
- COCO detections: ``{"image_id": 10034180012, "bbox": [...], "score": s, "category_id": 1}``,
  keyed by ``image_id``.

Boxes scoring below ``min_score`` (default 0.2, as DCPose and its successors) are dropped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.posetrack_json import load_json
from kpdiff.data.structures import FrameAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

__all__ = [
    "DEFAULT_MIN_SCORE",
    "boxes_for_frame",
    "convert_boxes",
    "image_key",
    "read_detections",
]

DEFAULT_MIN_SCORE = 0.2
"""Detector boxes with a lower score are dropped (DCPose's validation setting)."""

_EMPTY = np.zeros((0, 5), np.float64)


def image_key(image_path: str) -> str:
    """``"<video folder>/<file name>"``: how DCPose-format boxes find their frame.

    Args:
        image_path: an image path in any form (``images/val/v/000001.jpg``, absolute, Windows).
    """
    parts = PurePosixPath(image_path.replace("\\", "/")).parts
    return "/".join(parts[-2:])


def _field(path: str | os.PathLike, i: int, rec: dict, field: str) -> object:
    if field not in rec:
        raise KpdiffInputError(f"{path}: record {i}: field {field!r} is missing")
    return rec[field]


def read_detections(
    path: str | os.PathLike,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    category_id: int | None = 1,
) -> dict[str | int, np.ndarray]:
    """Read detector boxes (DCPose or COCO-detection layout, told apart by the first record).

    Args:
        path: the ``.json`` file (a list of records).
        min_score: boxes with ``score < min_score`` are dropped (default 0.2).
        category_id: COCO layout only: keep this category (default 1, person); ``None`` keeps all.

    Returns:
        ``{key: boxes}`` with ``boxes`` a float64 ``[N, 5]`` array of ``(x, y, w, h, score)`` in
        file order; ``key`` is :func:`image_key` of ``image_name`` (DCPose) or the ``image_id``
        (COCO). Images left with no box are absent.

    Raises:
        KpdiffInputError: not a list of records, a layout mixing both kinds, a missing field, a
            ``bbox`` that is not 4 finite numbers with ``w, h >= 0``, a non-finite score.
    """
    data = load_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise KpdiffInputError(f"{path}: expected a JSON list of detection records")
    dcpose = bool(data) and "image_name" in data[0]
    out: dict[str | int, list[list[float]]] = {}
    for i, rec in enumerate(data):
        if dcpose:
            name = _field(path, i, rec, "image_name")
            if not isinstance(name, str):
                raise KpdiffInputError(f"{path}: record {i}: field 'image_name' must be a string")
            key: str | int = image_key(name)
        else:
            key = _field(path, i, rec, "image_id")
            if isinstance(key, bool) or not isinstance(key, int):
                raise KpdiffInputError(f"{path}: record {i}: field 'image_id' must be an integer")
            if category_id is not None and rec.get("category_id", category_id) != category_id:
                continue
        where = f"{path}: record {i} (image {key})"
        box, score = _field(path, i, rec, "bbox"), _field(path, i, rec, "score")
        ok = isinstance(box, list) and len(box) == 4
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        if not ok or not np.all(np.isfinite(box)) or box[2] < 0 or box[3] < 0:
            raise KpdiffInputError(
                f"{where}: field 'bbox' must be [x, y, w, h], w, h >= 0, got {box}"
            )
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            raise KpdiffInputError(f"{where}: field 'score' must be a finite number, got {score!r}")
        if score >= min_score:
            out.setdefault(key, []).append([*map(float, box), float(score)])
    return {k: np.asarray(v, np.float64).reshape(-1, 5) for k, v in out.items()}


def boxes_for_frame(detections: dict[str | int, np.ndarray], frame: FrameAnnotation) -> np.ndarray:
    """The ``[N, 5]`` boxes of ``frame`` (looked up by ``image_id``, then by :func:`image_key`).

    Args:
        detections: the result of :func:`read_detections`.
        frame: the frame whose boxes are wanted.

    Returns:
        ``[N, 5]`` float64 ``(x, y, w, h, score)``; ``[0, 5]`` when the frame has none.
    """
    if frame.image_id is not None and frame.image_id in detections:
        return detections[frame.image_id]
    return detections.get(image_key(frame.image_path), _EMPTY)


def convert_boxes(
    src: str | Path,
    dst: str | Path,
    *,
    data: str | Path,
    split: str = "val",
    box_format: str = "xywh",
    min_score: float = 0.0,
) -> tuple[int, int]:
    """Write COCO-detection (or DCPose) records of ``src`` as a DCPose-layout file ``dst``.

    Args:
        src: a JSON list of ``{"image_id" | "image_name", "bbox", "score"[, "category_id"]}``.
        dst: the DCPose-layout output (``image_name``, ``bbox`` xywh, ``score``,
            ``category_id``), written atomically.
        data: dataset root whose ground truth maps ``image_id`` to the image's name.
        split: split of that ground truth. Default ``"val"``.
        box_format: ``"xywh"`` (default) or ``"xyxy"`` for the boxes of ``src``.
        min_score: drop boxes scoring below this. Default ``0`` (keep all; kpdiff drops those
            below :data:`DEFAULT_MIN_SCORE` when it reads the file).

    Returns:
        ``(boxes written, records whose image_id is not in the ground truth)``.
    """
    if box_format not in ("xywh", "xyxy"):
        raise KpdiffInputError(f"--box-format: expected xywh or xyxy, got {box_format!r}")
    records = load_json(src)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise KpdiffInputError(f"{src}: expected a JSON list of detection records")
    names = {
        f.image_id: f.image_path
        for v in read_posetrack(data, split=split)
        for f in v.frames
        if f.image_id is not None
    }
    out, unknown = [], 0
    for i, rec in enumerate(records):
        if rec.get("category_id", 1) != 1:
            continue
        box, score = rec.get("bbox"), rec.get("score")
        numbers = [score, *box] if isinstance(box, list) and len(box) == 4 else None
        if not numbers or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in numbers
        ):
            raise KpdiffInputError(f"{src}: record {i}: expected 'bbox' [4 numbers] and 'score'")
        if score < min_score:
            continue
        if box_format == "xyxy":
            box = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        if box[2] < 0 or box[3] < 0:  # read_detections would refuse the written file
            raise KpdiffInputError(
                f"{src}: record {i}: a box of negative width or height as {box_format} "
                f"({rec['bbox']}); is --box-format right?"
            )
        if "image_name" in rec:
            name = rec["image_name"]
        elif rec.get("image_id") in names:
            name = names[rec["image_id"]]
        else:
            unknown += 1
            continue
        out.append(
            {"image_name": name, "bbox": [float(v) for v in box], "score": float(score),
             "category_id": 1}
        )  # fmt: skip
    write_json_atomic(out, dst)
    return len(out), unknown
