"""Checks before a run on a dataset: clip-window frames that do not exist, detector boxes that
match no frame.

Both would otherwise surface late (a missing JPEG deep in a data loader) or not at all (boxes
keyed to other frame names give an AP of 0 without an error). :func:`preflight` runs both on a
clip dataset and returns one message per problem; ``kpdiff evaluate-model``, the PoseTrack
benchmark and ``benchmarks/posetrack/prepare.py check`` use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from kpdiff.data.clips import IMAGE_SUFFIXES, TopDownClipDataset, clip_indices
from kpdiff.data.detections import boxes_for_frame, image_key, read_detections
from kpdiff.data.posetrack_json import frame_number
from kpdiff.data.structures import VideoAnnotation

__all__ = [
    "box_coverage",
    "box_mismatch_message",
    "missing_frames_message",
    "missing_window_frames",
    "naming_style",
    "preflight",
    "window_frames",
]


def naming_style(names: Sequence[str]) -> str:
    """How a video's frame files are named, e.g. ``"6 digits from 000000 (PoseTrack18/21)"``."""
    stems = [Path(n).stem for n in names]
    if not stems:
        return "no frames"
    if not all(re.fullmatch(r"\d+", s) for s in stems):
        odd = next(s for s in stems if not re.fullmatch(r"\d+", s))
        return f"non-numeric names (e.g. {odd}{Path(names[0]).suffix})"
    widths = {len(s) for s in stems}
    first = min(stems, key=int)
    width = f"{widths.pop()} digits" if len(widths) == 1 else "mixed widths"
    label = f"{width} from {first}"
    if label == "6 digits from 000000":
        return label + " (PoseTrack18/21)"
    if label == "8 digits from 00000001":
        return label + " (PoseTrack17)"
    return label


def _missing_hint(path: Path) -> str:
    """Why ``path`` may be missing: no folder, or frames named in another convention."""
    folder = path.parent
    if not folder.is_dir():
        return f"its folder {folder} does not exist"
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return f"{folder} holds no images"
    num = frame_number(path.name)
    same = [f for f in files if num is not None and frame_number(f) == num]
    hint = f"{folder} holds {len(files)} frame(s) named {naming_style(files)}, e.g. {files[0]}"
    if same:
        hint += f"; {same[0]} has the same frame number (another naming convention?)"
    elif naming_style(files) != naming_style([path.name]):
        hint += f"; the annotation names {path.name}: another naming convention?"
    return hint


def window_frames(dataset: TopDownClipDataset) -> set[str]:
    """The paths of every frame the clip windows of ``dataset`` read."""
    cfg = dataset.config
    seen, paths = set(), set()
    for s in dataset.samples:
        key = (id(s.frame_paths), s.key)
        if key in seen:
            continue
        seen.add(key)
        paths.update(s.frame_paths[i] for i in clip_indices(s.key, len(s.frame_paths), cfg.delta,
                                                              cfg.edge))  # fmt: skip
    return paths


def missing_window_frames(dataset: TopDownClipDataset) -> tuple[int, list[str]]:
    """``(frames read, missing paths)`` over every clip window of ``dataset``."""
    paths = window_frames(dataset)
    return len(paths), sorted(p for p in paths if not Path(p).is_file())


def missing_frames_message(missing: Sequence[str], total: int, listed: int = 3) -> str:
    """One paragraph naming the first missing frames and what their folders hold instead."""
    lines = [f"{len(missing)} of the {total} frames that clip windows read do not exist:"]
    lines += [f"    {p}  ({_missing_hint(Path(p))})" for p in missing[:listed]]
    lines.append(
        "    kpdiff reads the frame names written in the annotation files, relative to the "
        "dataset root; see benchmarks/posetrack/README.md (PoseTrack17 frame names)."
    )
    return "\n".join(lines)


def box_coverage(videos: Sequence[VideoAnnotation], detections: dict) -> tuple[int, int, int]:
    """``(labelled frames, labelled frames with >= 1 box, boxes on labelled frames)``."""
    labelled = with_box = boxes = 0
    for video in videos:
        for frame in video.frames:
            if frame.is_labeled:
                labelled += 1
                n = len(boxes_for_frame(detections, frame))
                with_box += n > 0
                boxes += n
    return labelled, with_box, boxes


def box_mismatch_message(videos: Sequence[VideoAnnotation], detections: dict, path: str) -> str:
    """Explain how boxes are matched to frames, with a key from each side."""
    frame = next((f for v in videos for f in v.frames if f.is_labeled), None)
    box_keys = [repr(k) for k in list(detections)[:2]]
    frame_keys = "none" if frame is None else (
        f"image_id {frame.image_id!r}, name key {image_key(frame.image_path)!r}"
    )  # fmt: skip
    return (
        f"no box of {path} matches a labelled frame. DCPose records are matched by the last two "
        f"parts of image_name ('<video folder>/<file>'), COCO records by image_id. Box keys look "
        f"like {', '.join(box_keys) or 'nothing (no box kept)'}; frames have {frame_keys}."
    ) + (
        " PoseTrack17 frames have no image_id: use DCPose-layout boxes whose image names are "
        "the annotation files' frame names (boxes made for renamed frames do not match)."
        if frame is not None and frame.image_id is None
        else ""
    )


def preflight(
    dataset: TopDownClipDataset,
    videos: Sequence[VideoAnnotation],
    boxes: str | Path | None,
) -> list[str]:
    """The problems that would crash a run late or give a silent AP of 0, one message each.

    Args:
        dataset: the clip dataset about to be evaluated.
        videos: its ground truth.
        boxes: the detector-box file it was built with, or ``None`` / ``"gt"``; read with the
            dataset's own box threshold (``dataset.config.min_box_score``).

    Returns:
        Messages for frames of clip windows that do not exist and for detector boxes that
        match no labelled frame; empty when there is nothing to say.
    """
    problems = []
    total, missing = missing_window_frames(dataset)
    if missing:
        problems.append(missing_frames_message(missing, total))
    if boxes not in (None, "gt"):
        dets = read_detections(boxes, min_score=dataset.config.min_box_score)
        labelled, with_box, _ = box_coverage(videos, dets)
        if labelled and not with_box:
            problems.append(box_mismatch_message(videos, dets, str(boxes)))
    return problems
