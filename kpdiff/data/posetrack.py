"""Read and write PoseTrack annotation files (2017 ``annolist``, 2018 and 2021 COCO-style).

Every reader returns ``list[VideoAnnotation]`` (:mod:`kpdiff.data.structures`) with keypoints in
the schema's order (default :data:`~kpdiff.data.schemas.POSETRACK`). Two readings of the third
keypoint value, chosen by ``predictions``:

- ground truth (``predictions=False``): ``(x, y, v)`` as in the file; PoseTrack17 points get
  ``v = is_visible`` (1 when absent). A joint is absent when ``x = y = v = 0``.
- predictions (``predictions=True``): ``(x, y, score)``; the score comes from the ``scores`` list
  (2018/21) or the point's ``score`` (2017) and is :data:`MISSING_SCORE` (−9999, poseval's value)
  when the file has none. Joints absent in the file are stored as ``(0, 0, 0)``.

Bad files raise :class:`~kpdiff.errors.KpdiffInputError` naming the file, the record and the field.
Writers replace their target atomically (temporary file in the same folder, then ``os.replace``).

This module holds the entry points over files and folders (format detection, file listing,
:func:`read_posetrack`) and re-exports the rest: the PoseTrack18/21 reader
(``kpdiff.data.posetrack18``), the PoseTrack17 reader (``kpdiff.data.posetrack17``), the writers
(``kpdiff.data.posetrack18_writers``); JSON loading and the field checks are in
``kpdiff.data.posetrack_json``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from kpdiff.data.posetrack17 import POSETRACK17_JOINTS, parse17, read_posetrack17
from kpdiff.data.posetrack18 import parse18, read_posetrack18
from kpdiff.data.posetrack18_writers import write_posetrack18, write_posetrack18_predictions
from kpdiff.data.posetrack_json import MISSING_SCORE, PathLike, load_json
from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

__all__ = [
    "MISSING_SCORE",
    "POSETRACK17_JOINTS",
    "FileOrder",
    "detect_format",
    "list_annotation_files",
    "read_posetrack",
    "read_posetrack17",
    "read_posetrack18",
    "read_posetrack21",
    "write_json_atomic",
    "write_posetrack18",
    "write_posetrack18_predictions",
]


def read_posetrack21(
    path: PathLike,
    *,
    split: str = "val",
    predictions: bool = False,
    schema: KeypointSchema = POSETRACK,
) -> list[VideoAnnotation]:
    """Read PoseTrack21 pose annotations (``posetrack_data/<split>/*.json``).

    PoseTrack21 keeps PoseTrack18's per-video format and keypoints (the ears are placeholders)
    and adds ``person_id`` and ``has_labeled_person``, which are not needed here. Frames with
    boxes but no keypoints have ``is_labeled = false`` and are skipped by the evaluation.

    Args:
        path: the dataset root (holding ``posetrack_data/``), ``posetrack_data/`` itself, a split
            folder of ``.json`` files, or one file.
        split: the split folder to read under a root (default ``"val"``).
        predictions: read the third keypoint value as a score.
        schema: keypoint order of the result (default :data:`POSETRACK`).
    """
    files = list_annotation_files(path, split)
    return read_files(files, lambda f: read_posetrack18(f, predictions=predictions, schema=schema))


def detect_format(path: PathLike) -> str:
    """``"posetrack17"``, ``"posetrack18"`` or ``"posetrack21"`` for one annotation file.

    PoseTrack21 is told from 2018 by its ``person_id`` / ``has_labeled_person`` fields.
    """
    return format_of(load_json(path), path)


def format_of(data: Any, path: PathLike) -> str:
    """:func:`detect_format` of an already parsed file (``data``, read from ``path``)."""
    if isinstance(data, dict) and "annolist" in data:
        return "posetrack17"
    if isinstance(data, dict) and "images" in data:
        first = [
            x[0] for x in (data["images"], data.get("annotations")) if isinstance(x, list) and x
        ]
        is21 = any(
            isinstance(r, dict) and ("person_id" in r or "has_labeled_person" in r) for r in first
        )
        return "posetrack21" if is21 else "posetrack18"
    raise KpdiffInputError(f"{path}: not a PoseTrack file (no 'annolist' and no 'images')")


FileOrder = Literal["sorted", "listing"]
"""How a folder's ``*.json`` files are ordered: by name, or as the file system lists them."""


def list_annotation_files(
    path: PathLike, split: str = "val", order: FileOrder = "sorted"
) -> list[Path]:
    """The annotation files :func:`read_posetrack` reads for ``path`` (same arguments).

    A file is itself; a folder gives its ``*.json`` files, a dataset root those of its split
    folder (``annotations/<split>/``, ``posetrack_data/<split>/``, ``<split>/``, in this order).
    """
    if order not in ("sorted", "listing"):
        raise KpdiffInputError(f"order: expected 'sorted' or 'listing', got {order!r}")
    p = Path(path)
    if p.exists() and not p.is_dir():
        return [p]
    if not p.is_dir():
        raise KpdiffInputError(f"{path}: no such file or folder")
    # A dataset root's split folders win over stray JSON files (a manifest) in the root itself.
    for folder in (p / "annotations" / split, p / "posetrack_data" / split, p / split, p):
        if not folder.is_dir():
            continue
        # poseval's own call (glob.glob lists in the file system's order)
        files = [Path(f) for f in glob.glob(os.path.join(glob.escape(str(folder)), "*.json"))]
        if files:
            return sorted(files) if order == "sorted" else files
    raise KpdiffInputError(
        f"{path}: no .json files in it, nor in {split}/, posetrack_data/{split}/ or "
        f"annotations/{split}/"
    )


def read_files(files: Sequence[Path], read) -> list[VideoAnnotation]:
    """The videos ``read(f)`` returns for each file, in order; a video name read twice (from two
    files, or twice from one) raises :class:`~kpdiff.errors.KpdiffInputError`."""
    videos, origin = [], {}
    for f in files:
        for v in read(f):
            if v.name in origin:
                raise KpdiffInputError(f"{f}: video {v.name!r} already read from {origin[v.name]}")
            origin[v.name] = f
            videos.append(v)
    return videos


def read_posetrack(
    path: PathLike,
    *,
    split: str = "val",
    predictions: bool = False,
    schema: KeypointSchema | str = POSETRACK,
    order: FileOrder = "sorted",
) -> list[VideoAnnotation]:
    """Read PoseTrack17/18/21 annotations from a file or a folder, detecting each file's format.

    Args:
        path: a ``.json`` file, a folder of them, or a dataset root holding ``<split>/``,
            ``posetrack_data/<split>/`` (2021) or ``annotations/<split>/``.
        split: the split folder under a root (default ``"val"``).
        predictions: read the third keypoint value as a score (see the module docstring).
        schema: keypoint order of the result, or its name (default :data:`POSETRACK`).
        order: ``"sorted"`` (default): a folder's files by name, the same on every machine.
            ``"listing"``: in the order the file system lists them, which is how poseval reads
            ground truth; it decides how poseval ranks equal scores across videos
            (:func:`kpdiff.metrics.evaluate_files` uses it).

    Returns:
        the videos, in file order; video names are unique (a clash raises).
    """
    schema = get_schema(schema)

    def read(f: Path) -> list[VideoAnnotation]:
        data = load_json(f)
        parse = parse17 if format_of(data, f) == "posetrack17" else parse18
        return parse(data, f, predictions, schema)

    return read_files(list_annotation_files(path, split, order), read)
