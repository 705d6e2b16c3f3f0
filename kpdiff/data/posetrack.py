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
"""

from __future__ import annotations

import glob
import mmap
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from kpdiff.data.schemas import POSETRACK, KeypointSchema, get_schema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
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

MISSING_SCORE = -9999.0
"""Score given to a predicted joint whose file carries no score (poseval's ``MIN_SCORE``)."""

POSETRACK17_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)  # fmt: skip
"""PoseTrack17 point ``id`` -> keypoint name (poseval calls ``head_bottom`` "neck")."""

PathLike = str | os.PathLike


def _fail(path: PathLike, where: str, field: str, msg: str) -> KpdiffInputError:
    return KpdiffInputError(f"{path}: {where}: field {field!r}: {msg}")


def _load_json(path: PathLike) -> Any:
    """The parsed JSON file (orjson: strict JSON, UTF-8, no NaN, integers within 64 bits)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise KpdiffInputError(f"{path}: no such file") from None
    except OSError as e:
        raise KpdiffInputError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise KpdiffInputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            return _parse_file(f, info.st_size)
    except orjson.JSONDecodeError as e:
        raise KpdiffInputError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise KpdiffInputError(f"{path}: cannot be read ({e.strerror})") from None


def _parse_file(f: Any, size: int) -> Any:
    """``orjson.loads`` of the open file ``f``, parsed from its pages where it can be mapped (a
    fresh copy of each large file costs more in page faults than the parse saves), else read."""
    if size > 0:
        try:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a file system without mmap, a file emptied meanwhile
            m = None
        if m is not None:
            with m, memoryview(m) as view:
                return orjson.loads(view)
    return orjson.loads(f.read())


def _numbers(v: Any, n: int | None, path: PathLike, where: str, field: str) -> list[float]:
    """``v`` as a list of finite numbers (of length ``n`` when given)."""
    ok = isinstance(v, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v
    )
    if not ok:
        raise _fail(path, where, field, f"expected a list of numbers, got {str(v)[:80]}")
    if n is not None and len(v) != n:
        raise _fail(path, where, field, f"expected {n} numbers, got {len(v)}")
    if not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
        raise _fail(path, where, field, "expected finite numbers, got NaN/inf")
    return v


def _scalar(v: Any, path: PathLike, where: str, field: str, kind: type = float) -> Any:
    """A number, also unwrapping PoseTrack17's one-element lists (``[3]`` -> ``3``)."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, str) and kind is int and v.strip().lstrip("-").isdigit():
        v = int(v)
    if kind is int:
        ok = (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer()
        )
        if not ok:
            raise _fail(path, where, field, f"expected an integer, got {v!r}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
        raise _fail(path, where, field, f"expected a finite number, got {v!r}")
    return float(v)


def _flag(v: Any, path: PathLike, where: str, field: str) -> int:
    """A 0/1 flag given as a bool, a number, a digit string or a one-element list of those."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if v is None:
        return 0
    flag = int(v) if isinstance(v, bool) else _scalar(v, path, where, field, int)
    if flag < 0:  # a negative visibility would count as a joint at its coordinates
        raise _fail(path, where, field, f"expected a flag >= 0, got {flag}")
    return flag


def _frame_number(name: str) -> int | None:
    """The number before the first ``_`` of the name's stem (``v/000012.jpg`` -> 12), else None;
    the stem is :attr:`pathlib.PurePath.stem`'s, found without building a path per image."""
    base = name[name.rfind("/") + 1 :]
    if not base or base == ".":  # pathlib's normalisation decides these rare names
        base = Path(name).name
    dot = base.rfind(".")
    stem = (base[:dot] if 0 < dot < len(base) - 1 else base).split("_")[0]
    return int(stem) if _DIGITS.fullmatch(stem) else None


_DIGITS = re.compile(r"\d+")


# --------------------------------------------------------------------------- PoseTrack18 / 21


def _category_columns(data: dict, schema: KeypointSchema, path: PathLike) -> list[int]:
    """Schema index of each keypoint column of a COCO-style file (identity without names)."""
    cats = data.get("categories") or []
    if not isinstance(cats, list):
        raise _fail(path, "categories", "categories", "expected a list")
    names = next(
        (c.get("keypoints") for c in cats if isinstance(c, dict) and c.get("keypoints")), None
    )
    if names is None:
        return list(range(schema.num_keypoints))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(
            path, "categories[0]", "keypoints", f"expected a list of joint names, got {names!r:.80}"
        )
    unknown = [n for n in names if n not in schema.keypoints]
    if unknown or len(set(names)) != len(names):
        raise _fail(
            path, "categories[0]", "keypoints",
            f"names {unknown or names} do not fit schema {schema.name!r} {schema.keypoints}",
        )  # fmt: skip
    return [schema.index(n) for n in names]


def _read_regions(im: dict, path: PathLike, where: str) -> list[np.ndarray]:
    xs, ys = im.get("ignore_regions_x") or [], im.get("ignore_regions_y") or []
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise _fail(path, where, "ignore_regions_x", "expected as many x lists as y lists")
    out = []
    for r, (x, y) in enumerate(zip(xs, ys, strict=True)):
        x = _numbers(x, None, path, where, f"ignore_regions_x[{r}]")
        y = _numbers(y, len(x), path, where, f"ignore_regions_y[{r}]")
        out.append(np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], -1))
    return out


def _bulk(rows: list[Any], n: int) -> np.ndarray | None:
    """``rows`` (lists of ``n`` finite numbers each) as one ``[len(rows), n]`` float64 array,
    or ``None`` when any row is not such a list (the caller then names the bad row)."""
    if not rows:
        return np.zeros((0, n))
    try:
        a = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if a.dtype.kind not in "iuf" or a.shape != (len(rows), n):
        return None
    a = a.astype(np.float64, copy=False)
    return a if np.isfinite(a).all() else None


class _AnnotationWhere:
    """``where[j]`` = ``"annotations[j] (image id …)"``, built only when a message needs it."""

    def __init__(self, image_ids: Sequence[Any]) -> None:
        self.image_ids = image_ids

    def __getitem__(self, j: int) -> str:
        return f"annotations[{j}] (image id {self.image_ids[j]})"


def _rows(
    anns: list[dict], field: str, n: int, path: PathLike, where: Sequence[str], optional: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [N, n], given [N] bool)`` of one numeric list field of every annotation.

    A missing field (or ``[]``, or ``null``) is not given when ``optional``, else an error; any
    other malformed value raises :class:`KpdiffInputError` naming the annotation and the field.
    """
    vals = [a.get(field) for a in anns]
    missing = vals.count(None) + vals.count([])  # C loops: the common cases cost nothing
    if missing == len(vals) and optional:
        return np.zeros((len(anns), n)), np.zeros(len(anns), bool)
    if missing == 0:
        given, idx, rows = np.ones(len(anns), bool), None, vals
    else:
        given = np.array([v is not None and v != [] for v in vals], bool)
        if not optional and not given.all():
            j = int(np.flatnonzero(~given)[0])
            raise _fail(path, where[j], field, f"expected a list of {n} numbers, got nothing")
        idx = np.flatnonzero(given)
        rows = [vals[j] for j in idx.tolist()]
    vals_ = _bulk(rows, n)
    if vals_ is None:  # find and name the first bad one
        for j, r in enumerate(rows):
            k = j if idx is None else int(idx[j])
            _numbers(r, n, path, where[k], field)
        k = 0 if idx is None else int(idx[0])
        raise _fail(path, where[k], field, f"expected lists of {n} finite numbers")
    if idx is None:
        return vals_, given
    out = np.zeros((len(anns), n))
    out[idx] = vals_
    return out, given


@dataclass
class _Table18:
    """A PoseTrack18/21 file as arrays: images and annotations in file order, checked.

    Attributes:
        stem: the file's stem (the video name of a per-video file).
        paths: ``[I]`` image file names.
        image_ids: ``[I]`` image ids.
        labeled: ``[I]`` bool ``is_labeled`` (an image without the flag: whether it has persons).
        regions: image position -> its ignore polygons ``[V, 2]`` (only images with some).
        image: ``[N]`` int64 image position of each annotation.
        keypoints: ``[N, K, 3]`` float64 in schema order, read as the module docstring says.
        present: ``[N, K]`` bool, which joints the file lists.
        box: ``[N, 4]`` ``xywh`` where ``has_box`` (``[N]`` bool), else zeros.
        head_box: ``[N, 4]`` ``xyxy`` where ``has_head`` (``[N]`` bool), else zeros.
        track_id: ``[N]`` ints or ``None``.
        score: ``[N]`` numbers or ``None`` (checked finite; not yet converted to float).
    """

    stem: str
    paths: list[str]
    image_ids: list[int]
    labeled: np.ndarray
    regions: dict[int, list[np.ndarray]]
    image: np.ndarray
    keypoints: np.ndarray
    present: np.ndarray
    box: np.ndarray
    has_box: np.ndarray
    head_box: np.ndarray
    has_head: np.ndarray
    track_id: list[int | None]
    score: list[Any]


def _images18(
    images: list[Any], path: PathLike
) -> tuple[list[str], list[int], list[bool], list[int], dict[int, list[np.ndarray]]]:
    """``(paths, ids, is_labeled, unflagged positions, regions)`` of a file's ``images``."""
    if set(map(type, images)) <= {dict}:  # the common file, checked a field at a time
        ids = [im.get("id") for im in images]
        paths = [im.get("file_name") for im in images]
        flags = [im.get("is_labeled") for im in images]
        if (
            set(map(type, ids)) <= {int}
            and set(map(type, paths)) <= {str}
            and set(map(type, flags)) <= {bool, type(None)}
            and len(set(ids)) == len(ids)
        ):
            regions: dict[int, list[np.ndarray]] = {}
            for i, im in enumerate(images):
                if im.get("ignore_regions_x") or im.get("ignore_regions_y"):
                    r = _read_regions(im, path, f"images[{i}] (image id {ids[i]})")
                    if r:
                        regions[i] = r
            unflagged = [i for i, f in enumerate(flags) if f is None]
            return paths, ids, [f is True for f in flags], unflagged, regions
    return _images18_checked(images, path)


def _images18_checked(
    images: list[Any], path: PathLike
) -> tuple[list[str], list[int], list[bool], list[int], dict[int, list[np.ndarray]]]:
    """:func:`_images18` an image at a time, naming the first bad field."""
    paths, ids, labeled, unflagged = [], [], [], []
    position: dict[int, int] = {}
    regions: dict[int, list[np.ndarray]] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise _fail(path, f"images[{i}]", "images", "expected an object")
        iid = im.get("id")
        if type(iid) is not int:
            iid = _scalar(iid, path, f"images[{i}]", "id", int)
        name = im.get("file_name")
        if not isinstance(name, str):
            where = f"images[{i}] (image id {iid})"
            raise _fail(path, where, "file_name", f"expected a string, got {name!r}")
        if iid in position:
            raise _fail(path, f"images[{i}] (image id {iid})", "id", "duplicate image id")
        position[iid] = i
        flag = im.get("is_labeled")
        if flag is None:
            unflagged.append(i)
        elif flag is not True and flag is not False:
            flag = _flag(flag, path, f"images[{i}] (image id {iid})", "is_labeled")
        paths.append(name)
        ids.append(iid)
        labeled.append(bool(flag))
        if im.get("ignore_regions_x") or im.get("ignore_regions_y"):
            r = _read_regions(im, path, f"images[{i}] (image id {iid})")
            if r:
                regions[i] = r
    return paths, ids, labeled, unflagged, regions


def _owners18(
    annotations: list[Any], position: dict[int, int], path: PathLike
) -> tuple[list[int], list[int]]:
    """``(image position, image id)`` of every annotation; errors name the annotation."""
    try:
        iids = [a.get("image_id") for a in annotations]
        if set(map(type, iids)) <= {int}:
            return [position[i] for i in iids], iids
    except (AttributeError, KeyError):
        pass
    owners, iids = [], []
    for j, a in enumerate(annotations):  # the slow way, which names the first bad annotation
        if not isinstance(a, dict):
            raise _fail(path, f"annotations[{j}]", "annotations", "expected an object")
        iid = a.get("image_id")
        if type(iid) is not int:
            iid = _scalar(iid, path, f"annotations[{j}]", "image_id", int)
        if iid not in position:
            where = f"annotations[{j}] (image id {iid})"
            raise _fail(path, where, "image_id", "no image with this id in 'images'")
        owners.append(position[iid])
        iids.append(iid)
    return owners, iids


def _ids_and_scores18(
    annotations: list[dict], path: PathLike, where: Sequence[str]
) -> tuple[list[int | None], list[Any]]:
    """Every annotation's ``track_id`` (int or None) and ``score`` (finite number or None)."""
    tids = [a.get("track_id") for a in annotations]
    scores = [a.get("score") for a in annotations]
    if set(map(type, tids)) <= {int, type(None)} and set(map(type, scores)) <= {
        float,
        int,
        type(None),
    }:
        given = [s for s in scores if s is not None]
        if not given or np.isfinite(np.asarray(given, np.float64)).all():
            return tids, scores
    for j, (tid, score) in enumerate(zip(tids, scores, strict=True)):  # name the first bad one
        if tid is not None:
            tids[j] = _scalar(tid, path, where[j], "track_id", int)
        if score is not None:
            scores[j] = _scalar(score, path, where[j], "score")
    return tids, scores


def _table18(data: Any, path: PathLike, predictions: bool, schema: KeypointSchema) -> _Table18:
    """Check and convert a parsed PoseTrack18/21 file; numbers are converted in bulk."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _fail(path, "top level", "images", "expected an object with an 'images' list")
    if not data["images"]:
        raise _fail(path, "top level", "images", "expected at least one image (a video's frames)")
    cols = _category_columns(data, schema, path)
    paths, ids, labeled, unflagged, regions = _images18(data["images"], path)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise _fail(
            path, "top level", "annotations",
            "expected a list of persons ([] for a video without any), got "
            + ("nothing" if annotations is None else type(annotations).__name__),
        )  # fmt: skip
    owners, iids = _owners18(annotations, {iid: i for i, iid in enumerate(ids)}, path)
    where = _AnnotationWhere(iids)
    n, N, K = len(cols), len(annotations), schema.num_keypoints
    raw = _rows(annotations, "keypoints", 3 * n, path, where, optional=False)[0].reshape(N, n, 3)
    in_file = ~((raw[..., 0] == 0) & (raw[..., 1] == 0) & (raw[..., 2] == 0))  # [N, n]
    if predictions:
        scores, has_scores = _rows(annotations, "scores", n, path, where, optional=True)
        raw[..., 2] = np.where(has_scores[:, None], scores, MISSING_SCORE)
        raw[~in_file] = 0.0
    elif (raw[..., 2] < 0).any():
        j = int(np.flatnonzero((raw[..., 2] < 0).any(axis=1))[0])
        raise _fail(path, where[j], "keypoints", "a visibility (every third value) is negative")
    if cols == list(range(K)):
        kp, present = raw, in_file
    else:
        kp, present = np.zeros((N, K, 3)), np.zeros((N, K), bool)
        kp[:, cols], present[:, cols] = raw, in_file
    box, has_box = _rows(annotations, "bbox", 4, path, where, optional=True)
    head, has_head = _rows(annotations, "bbox_head", 4, path, where, optional=True)
    head[:, 2:] += head[:, :2]  # xywh in the file, xyxy in memory (x2 = x + w, as poseval does)
    tids, person_scores = _ids_and_scores18(annotations, path, where)
    image = np.asarray(owners, np.int64).reshape(-1)
    is_labeled = np.asarray(labeled, bool).reshape(-1)
    if unflagged:  # images without `is_labeled`: labelled when they have persons
        counts = np.bincount(image, minlength=len(ids))
        is_labeled[unflagged] = counts[unflagged] > 0
    return _Table18(
        stem=Path(path).stem,
        paths=paths,
        image_ids=ids,
        labeled=is_labeled,
        regions=regions,
        image=image,
        keypoints=kp,
        present=present,
        box=box,
        has_box=has_box,
        head_box=head,
        has_head=has_head,
        track_id=tids,
        score=person_scores,
    )


def read_posetrack18(
    path: PathLike, *, predictions: bool = False, schema: KeypointSchema = POSETRACK
) -> list[VideoAnnotation]:
    """Read one PoseTrack18 (or PoseTrack21) COCO-style file.

    A per-video file gives one video named after the file's stem; a merged file whose images lie
    in several folders gives one video per folder, named after the folder. Frames keep the file's
    order; ``frame_index`` is the number in the image's file name (``000012.jpg`` -> 12), else
    its position.

    Args:
        path: the ``.json`` file.
        predictions: read the third keypoint value as a score (see the module docstring).
        schema: keypoint order of the result; the file's ``categories[0].keypoints`` names are
            mapped onto it (default :data:`POSETRACK`).

    Raises:
        KpdiffInputError: unreadable JSON, a missing or ill-typed field, duplicate image ids, an
            annotation whose ``image_id`` is not in ``images``, a keypoint list of the wrong size.
    """
    return _parse18(_load_json(path), path, predictions, schema)


def _parse18(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[VideoAnnotation]:
    t = _table18(data, path, predictions, schema)
    frames = []
    for i, (name, iid) in enumerate(zip(t.paths, t.image_ids, strict=True)):
        num = _frame_number(name)
        frames.append(
            FrameAnnotation(
                image_path=name,
                frame_index=i if num is None else num,
                image_id=iid,
                is_labeled=bool(t.labeled[i]),
                ignore_regions=t.regions.get(i) or [],
            )
        )
    kp, present, box, head = t.keypoints, t.present, t.box, t.head_box
    for j, (i, tid, score) in enumerate(zip(t.image.tolist(), t.track_id, t.score, strict=True)):
        frames[i].persons.append(
            PersonAnnotation(
                keypoints=kp[j],
                box=box[j] if t.has_box[j] else None,
                head_box=head[j] if t.has_head[j] else None,
                track_id=None if tid is None else int(tid),
                score=None if score is None else float(score),
                present=present[j] if predictions else None,
            )
        )
    return _group_by_folder(frames, t.stem)


def _group_by_folder(frames: list[FrameAnnotation], stem: str) -> list[VideoAnnotation]:
    groups: dict[str, list[FrameAnnotation]] = {}
    for f in frames:
        groups.setdefault(os.path.dirname(f.image_path), []).append(f)
    if len(groups) <= 1:
        return [VideoAnnotation(name=stem, frames=frames)]
    return [VideoAnnotation(name=os.path.basename(k) or k, frames=v) for k, v in groups.items()]


@dataclass
class _VideoTable:
    """One video of a PoseTrack18/21 file as arrays, without a Python object per person: what
    :func:`kpdiff.metrics.evaluate_files` reads (:func:`read_posetrack18`'s video, flattened).

    Attributes:
        name: the video's name (as :func:`read_posetrack18` names it).
        paths: ``[T]`` image paths of its frames, in file order.
        image_ids: ``[T]`` image ids.
        labeled: ``[T]`` bool ``is_labeled``.
        regions: frame position -> ignore polygons ``[V, 2]`` (only frames with some).
        frame: ``[N]`` int64 frame position of each person, non-decreasing (file order within a
            frame, as :attr:`FrameAnnotation.persons`).
        keypoints: ``[N, K, 3]`` float64 ``(x, y, v)`` (``(x, y, score)`` for predictions).
        present: ``[N, K]`` bool (:meth:`PersonAnnotation.joints_present`).
        head_box: ``[N, 4]`` ``xyxy``, NaN rows for persons without one.
        track_id: ``[N]`` ints or ``None``.
    """

    name: str
    paths: list[str]
    image_ids: list[int]
    labeled: np.ndarray
    regions: dict[int, list[np.ndarray]]
    frame: np.ndarray
    keypoints: np.ndarray
    present: np.ndarray
    head_box: np.ndarray
    track_id: list[int | None]


def _video_tables18(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[_VideoTable]:
    """The videos of one parsed PoseTrack18/21 file (``data``, read from ``path``) as
    :class:`_VideoTable` s: the same checks, errors, videos, frames and numbers as
    :func:`read_posetrack18`, without building an object per frame or person."""
    t = _table18(data, path, predictions, schema)
    head = np.where(t.has_head[:, None], t.head_box, np.nan)
    if len({p.rpartition("/")[0] for p in t.paths}) <= 1:  # one folder (what dirname gives)
        names: dict[str, None] = {}
    else:
        folders = list(map(os.path.dirname, t.paths))
        names = dict.fromkeys(folders)  # in order of first appearance
    if len(names) <= 1:
        groups: list[tuple[str, np.ndarray | None]] = [(t.stem, None)]
    else:
        gid = {d: g for g, d in enumerate(names)}
        of_image = np.array([gid[d] for d in folders], np.int64)
        groups = [(os.path.basename(d) or d, np.flatnonzero(of_image == g)) for g, d in
                  enumerate(names)]  # fmt: skip
    out = []
    for name, images in groups:
        if images is None:
            frame, sel = t.image, None
            paths, ids, labeled, regions = t.paths, t.image_ids, t.labeled, t.regions
        else:
            local = np.full(len(t.paths), -1, np.int64)
            local[images] = np.arange(len(images))
            sel = np.flatnonzero(local[t.image] >= 0)
            frame = local[t.image[sel]]
            paths = [t.paths[i] for i in images.tolist()]
            ids = [t.image_ids[i] for i in images.tolist()]
            labeled = t.labeled[images]
            regions = {int(local[i]): r for i, r in t.regions.items() if local[i] >= 0}
        if frame.size and (np.diff(frame) < 0).any():  # persons listed out of frame order
            order = np.argsort(frame, kind="stable")
            sel = order if sel is None else sel[order]
            frame = frame[order]
        if sel is None:
            kp, present, hb, tids = t.keypoints, t.present, head, t.track_id
        else:
            kp, present, hb = t.keypoints[sel], t.present[sel], head[sel]
            tids = [t.track_id[j] for j in sel.tolist()]
        out.append(_VideoTable(name, paths, ids, labeled, regions, frame, kp, present, hb, tids))
    return out


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
    return _read_files(files, lambda f: read_posetrack18(f, predictions=predictions, schema=schema))


# --------------------------------------------------------------------------- PoseTrack17


def _read_person17(
    r: dict, schema: KeypointSchema, predictions: bool, path: PathLike, where: str
) -> PersonAnnotation:
    kp = np.zeros((schema.num_keypoints, 3), np.float64)
    head = None
    if any(k in r for k in ("x1", "y1", "x2", "y2")):
        head = np.array([_scalar(r.get(k), path, where, k) for k in ("x1", "y1", "x2", "y2")])
    annopoints = r.get("annopoints") or []
    if isinstance(annopoints, dict):
        annopoints = [annopoints]
    if not isinstance(annopoints, list) or not isinstance(
        annopoints[0] if annopoints else {}, dict | None
    ):
        raise _fail(path, where, "annopoints", "expected an object (or a list of one) with 'point'")
    points = (annopoints[0] or {}).get("point", []) if annopoints else []
    if not isinstance(points, list):
        raise _fail(path, where, "annopoints", "expected a list of points")
    seen = set()
    present = np.zeros(schema.num_keypoints, bool)
    for p, pt in enumerate(points):
        pw = f"{where}, point {p}"
        jid = _scalar(pt.get("id") if isinstance(pt, dict) else None, path, pw, "id", int)
        if not 0 <= jid < len(POSETRACK17_JOINTS):
            continue  # poseval ignores ids it does not know
        if jid in seen:
            raise _fail(path, pw, "id", f"joint id {jid} appears twice in one person")
        seen.add(jid)
        name = POSETRACK17_JOINTS[jid]
        if name not in schema.keypoints:
            continue
        x, y = (_scalar(pt.get(k), path, pw, k) for k in ("x", "y"))
        if predictions:
            s = pt.get("score")
            third = MISSING_SCORE if s is None else _scalar(s, path, pw, "score")
        else:
            vis = pt.get("is_visible")
            third = 1.0 if vis is None else float(_flag(vis, path, pw, "is_visible"))
        kp[schema.index(name)] = (x, y, third)
        present[schema.index(name)] = True  # a listed point is a joint, even (0, 0) with v = 0
    tid, score = r.get("track_id"), r.get("score")
    return PersonAnnotation(
        keypoints=kp,
        head_box=head,
        track_id=None if tid is None else _scalar(tid, path, where, "track_id", int),
        score=None if score is None else _scalar(score, path, where, "score"),
        present=present,
    )


def _read_regions17(entry: dict, path: PathLike, where: str) -> list[np.ndarray]:
    regions = entry.get("ignore_regions") or []
    out = []
    for r, reg in enumerate(regions if isinstance(regions, list) else [None]):
        pts = reg.get("point") if isinstance(reg, dict) else None
        if not isinstance(pts, list):
            raise _fail(path, where, f"ignore_regions[{r}]", "expected {'point': [...]}")
        xy = [
            [_scalar(p.get(k) if isinstance(p, dict) else None, path, where, f"ignore_regions[{r}]")
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
    return _parse17(_load_json(path), path, predictions, schema)


def _parse17(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[VideoAnnotation]:
    annolist = data.get("annolist") if isinstance(data, dict) else None
    if not isinstance(annolist, list):
        raise _fail(path, "top level", "annolist", "expected an object with an 'annolist' list")
    if not annolist:
        raise _fail(path, "top level", "annolist", "expected at least one image (a video's frames)")
    frames = []
    for i, entry in enumerate(annolist):
        where = f"annolist[{i}]"
        image = entry.get("image") if isinstance(entry, dict) else None
        image = image[0] if isinstance(image, list) and image else image
        name = image.get("name") if isinstance(image, dict) else None
        if not isinstance(name, str):
            raise _fail(path, where, "image", "expected [{'name': <image path>}]")
        rects = entry.get("annorect") or []
        if not isinstance(rects, list):
            raise _fail(path, where, "annorect", "expected a list")
        persons = []
        for j, r in enumerate(rects):
            if not isinstance(r, dict):
                raise _fail(path, f"{where}, annorect[{j}]", "annorect", "expected an object")
            persons.append(_read_person17(r, schema, predictions, path, f"{where}, annorect[{j}]"))
        imgnum, num = entry.get("imgnum"), _frame_number(name)
        if imgnum is not None:
            index = _scalar(imgnum, path, where, "imgnum", int) - 1
        else:
            index = i if num is None else num
        labeled = entry.get("is_labeled")
        frames.append(
            FrameAnnotation(
                image_path=name,
                frame_index=index,
                is_labeled=bool(
                    persons if labeled is None else _flag(labeled, path, where, "is_labeled")
                ),
                persons=persons,
                ignore_regions=_read_regions17(entry, path, where),
            )
        )
    return [VideoAnnotation(name=Path(path).stem, frames=frames)]


# --------------------------------------------------------------------------- any format


def detect_format(path: PathLike) -> str:
    """``"posetrack17"``, ``"posetrack18"`` or ``"posetrack21"`` for one annotation file.

    PoseTrack21 is told from 2018 by its ``person_id`` / ``has_labeled_person`` fields.
    """
    return _format_of(_load_json(path), path)


def _format_of(data: Any, path: PathLike) -> str:
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


def _read_files(files: Sequence[Path], read) -> list[VideoAnnotation]:
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
        data = _load_json(f)
        parse = _parse17 if _format_of(data, f) == "posetrack17" else _parse18
        return parse(data, f, predictions, schema)

    return _read_files(list_annotation_files(path, split, order), read)


# --------------------------------------------------------------------------- writers


def _person_json(
    p: PersonAnnotation,
    j: int,
    image_id: int,
    schema: KeypointSchema,
    predictions: bool,
    where: str,
) -> dict:
    kp = np.asarray(p.keypoints, np.float64)
    if kp.shape != (schema.num_keypoints, 3) or not np.all(np.isfinite(kp)):
        raise KpdiffInputError(
            f"{where}, person {j}: keypoints must be finite with shape [{schema.num_keypoints}, 3],"
            f" got {kp.shape}"
        )
    absent = np.all(kp == 0, axis=1)
    out: dict[str, Any] = {
        "id": image_id * 100 + j,
        "image_id": image_id,
        "category_id": 1,
        "track_id": j if p.track_id is None else int(p.track_id),
        "iscrowd": False,
    }
    if predictions:  # third value: 1 = present, 0 = absent; the scores go to `scores`
        flags = np.where(absent, 0.0, 1.0)
        out["keypoints"] = np.column_stack([kp[:, :2], flags]).ravel().tolist()
        out["scores"] = kp[:, 2].tolist()
    else:
        out["keypoints"] = kp.ravel().tolist()
        out["scores"] = []
        out["num_keypoints"] = int((~absent).sum())
    if p.box is not None:
        out["bbox"] = np.asarray(p.box, np.float64).tolist()
    if p.head_box is not None:
        x1, y1, x2, y2 = np.asarray(p.head_box, np.float64).tolist()
        out["bbox_head"] = [x1, y1, x2 - x1, y2 - y1]
    if p.score is not None:
        out["score"] = float(p.score)
    return out


def _video_json(video: VideoAnnotation, schema: KeypointSchema, predictions: bool) -> dict:
    vid = video.name.split("_")[0]
    images, annotations = [], []
    for i, f in enumerate(video.frames):
        iid = i if f.image_id is None else int(f.image_id)
        images.append({
            "id": iid,
            "file_name": f.image_path,
            "frame_id": iid,
            "vid_id": vid,
            "nframes": len(video.frames),
            "is_labeled": bool(f.is_labeled),
            "has_no_densepose": True,
            "ignore_regions_x": [np.asarray(r)[:, 0].tolist() for r in f.ignore_regions],
            "ignore_regions_y": [np.asarray(r)[:, 1].tolist() for r in f.ignore_regions],
        })  # fmt: skip
        where = f"video {video.name!r}, frame {i} ({f.image_path})"
        annotations += [
            _person_json(p, j, iid, schema, predictions, where) for j, p in enumerate(f.persons)
        ]
    category = {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(schema.keypoints),
        "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton],
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def write_posetrack18(
    video: VideoAnnotation, path: PathLike, *, schema: KeypointSchema = POSETRACK
) -> Path:
    """Write one video's ground truth as a PoseTrack18 file (atomically); returns the path.

    Keypoints are written as stored ``(x, y, v)``, head boxes as ``bbox_head`` ``xywh``, ignore
    regions as ``ignore_regions_x/_y``, categories from ``schema`` (1-based skeleton). A frame
    without ``image_id`` gets its position in the video; a person without ``track_id`` gets its
    position in the frame. ``read_posetrack18`` reads the file back to an equal video.

    Args:
        video: the video; its ``name`` becomes ``vid_id`` up to the first ``_``.
        path: target ``.json`` path (parent folders are created).
        schema: the keypoint schema of ``video`` (default :data:`POSETRACK`).
    """
    return write_json_atomic(_video_json(video, schema, predictions=False), path)


def write_posetrack18_predictions(
    video: VideoAnnotation, path: PathLike, *, schema: KeypointSchema = POSETRACK
) -> Path:
    """Write one video's predictions as a PoseTrack18 submission file (atomically).

    ``keypoints[:, 2]`` of each person is its joints' scores (for DiffPose: heatmap max × box
    score, computed by the caller); they go to the ``scores`` list while the keypoint triplets
    get ``v = 1`` (``0`` for a joint stored as ``(0, 0, 0)``, which poseval reads as absent).
    Every frame is written, labelled or not, with ``id``, ``file_name``, ``frame_id``,
    ``vid_id``, ``is_labeled``, as poseval expects; persons get ``track_id`` and ``image_id``.

    Args:
        video: the predicted video; frames in the ground truth's order with its image ids.
        path: target ``.json`` path (parent folders are created).
        schema: the keypoint schema of ``video`` (default :data:`POSETRACK`).
    """
    return write_json_atomic(_video_json(video, schema, predictions=True), path)
