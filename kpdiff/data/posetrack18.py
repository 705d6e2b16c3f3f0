"""The PoseTrack18/21 (COCO-style) reader: a file's images and annotations are checked and turned
into arrays in bulk, then into videos (:func:`read_posetrack18`) or, for the metric, into
:class:`VideoTable` s. The keypoint readings are those described in :mod:`kpdiff.data.posetrack`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpdiff.data.posetrack_json import (
    MISSING_SCORE,
    PathLike,
    check_flag,
    check_numbers,
    check_rows,
    check_scalar,
    fail,
    frame_number,
    load_json,
)
from kpdiff.data.schemas import POSETRACK, KeypointSchema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation

__all__ = ["read_posetrack18"]


def _category_columns(data: dict, schema: KeypointSchema, path: PathLike) -> list[int]:
    """Schema index of each keypoint column of a COCO-style file (identity without names)."""
    cats = data.get("categories") or []
    if not isinstance(cats, list):
        raise fail(path, "categories", "categories", "expected a list")
    names = next(
        (c.get("keypoints") for c in cats if isinstance(c, dict) and c.get("keypoints")), None
    )
    if names is None:
        return list(range(schema.num_keypoints))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise fail(
            path, "categories[0]", "keypoints", f"expected a list of joint names, got {names!r:.80}"
        )
    unknown = [n for n in names if n not in schema.keypoints]
    if unknown or len(set(names)) != len(names):
        raise fail(
            path, "categories[0]", "keypoints",
            f"names {unknown or names} do not fit schema {schema.name!r} {schema.keypoints}",
        )  # fmt: skip
    return [schema.index(n) for n in names]


def _read_regions(im: dict, path: PathLike, where: str) -> list[np.ndarray]:
    xs, ys = im.get("ignore_regions_x") or [], im.get("ignore_regions_y") or []
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise fail(path, where, "ignore_regions_x", "expected as many x lists as y lists")
    out = []
    for r, (x, y) in enumerate(zip(xs, ys, strict=True)):
        x = check_numbers(x, None, path, where, f"ignore_regions_x[{r}]")
        y = check_numbers(y, len(x), path, where, f"ignore_regions_y[{r}]")
        out.append(np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], -1))
    return out


class _AnnotationWhere:
    """``where[j]`` = ``"annotations[j] (image id …)"``, built only when a message needs it."""

    def __init__(self, image_ids: Sequence[Any]) -> None:
        self.image_ids = image_ids

    def __getitem__(self, j: int) -> str:
        return f"annotations[{j}] (image id {self.image_ids[j]})"


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
            raise fail(path, f"images[{i}]", "images", "expected an object")
        iid = im.get("id")
        if type(iid) is not int:
            iid = check_scalar(iid, path, f"images[{i}]", "id", int)
        name = im.get("file_name")
        if not isinstance(name, str):
            where = f"images[{i}] (image id {iid})"
            raise fail(path, where, "file_name", f"expected a string, got {name!r}")
        if iid in position:
            raise fail(path, f"images[{i}] (image id {iid})", "id", "duplicate image id")
        position[iid] = i
        flag = im.get("is_labeled")
        if flag is None:
            unflagged.append(i)
        elif flag is not True and flag is not False:
            flag = check_flag(flag, path, f"images[{i}] (image id {iid})", "is_labeled")
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
            raise fail(path, f"annotations[{j}]", "annotations", "expected an object")
        iid = a.get("image_id")
        if type(iid) is not int:
            iid = check_scalar(iid, path, f"annotations[{j}]", "image_id", int)
        if iid not in position:
            where = f"annotations[{j}] (image id {iid})"
            raise fail(path, where, "image_id", "no image with this id in 'images'")
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
            tids[j] = check_scalar(tid, path, where[j], "track_id", int)
        if score is not None:
            scores[j] = check_scalar(score, path, where[j], "score")
    return tids, scores


def _table18(data: Any, path: PathLike, predictions: bool, schema: KeypointSchema) -> _Table18:
    """Check and convert a parsed PoseTrack18/21 file; numbers are converted in bulk."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise fail(path, "top level", "images", "expected an object with an 'images' list")
    if not data["images"]:
        raise fail(path, "top level", "images", "expected at least one image (a video's frames)")
    cols = _category_columns(data, schema, path)
    paths, ids, labeled, unflagged, regions = _images18(data["images"], path)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise fail(
            path, "top level", "annotations",
            "expected a list of persons ([] for a video without any), got "
            + ("nothing" if annotations is None else type(annotations).__name__),
        )  # fmt: skip
    owners, iids = _owners18(annotations, {iid: i for i, iid in enumerate(ids)}, path)
    where = _AnnotationWhere(iids)
    n, N, K = len(cols), len(annotations), schema.num_keypoints
    rows = check_rows(annotations, "keypoints", 3 * n, path, where, optional=False)[0]
    raw = rows.reshape(N, n, 3)
    in_file = ~((raw[..., 0] == 0) & (raw[..., 1] == 0) & (raw[..., 2] == 0))  # [N, n]
    if predictions:
        scores, has_scores = check_rows(annotations, "scores", n, path, where, optional=True)
        raw[..., 2] = np.where(has_scores[:, None], scores, MISSING_SCORE)
        raw[~in_file] = 0.0
    elif (raw[..., 2] < 0).any():
        j = int(np.flatnonzero((raw[..., 2] < 0).any(axis=1))[0])
        raise fail(path, where[j], "keypoints", "a visibility (every third value) is negative")
    if cols == list(range(K)):
        kp, present = raw, in_file
    else:
        kp, present = np.zeros((N, K, 3)), np.zeros((N, K), bool)
        kp[:, cols], present[:, cols] = raw, in_file
    box, has_box = check_rows(annotations, "bbox", 4, path, where, optional=True)
    head, has_head = check_rows(annotations, "bbox_head", 4, path, where, optional=True)
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
    return parse18(load_json(path), path, predictions, schema)


def parse18(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[VideoAnnotation]:
    """The videos of one parsed PoseTrack18/21 file (``data``, read from ``path``), checked as
    :func:`read_posetrack18` checks them."""
    t = _table18(data, path, predictions, schema)
    frames = []
    for i, (name, iid) in enumerate(zip(t.paths, t.image_ids, strict=True)):
        num = frame_number(name)
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
class VideoTable:
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


def video_tables18(
    data: Any, path: PathLike, predictions: bool, schema: KeypointSchema
) -> list[VideoTable]:
    """The videos of one parsed PoseTrack18/21 file (``data``, read from ``path``) as
    :class:`VideoTable` s: the same checks, errors, videos, frames and numbers as
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
        out.append(VideoTable(name, paths, ids, labeled, regions, frame, kp, present, hb, tids))
    return out
