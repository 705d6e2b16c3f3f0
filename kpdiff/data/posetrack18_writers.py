"""The PoseTrack18 writers: ground truth and prediction (submission) files, written atomically
(temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kpdiff.data.posetrack_json import PathLike
from kpdiff.data.schemas import POSETRACK, KeypointSchema
from kpdiff.data.structures import PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic

__all__ = ["write_posetrack18", "write_posetrack18_predictions"]


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
