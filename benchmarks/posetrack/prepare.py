"""Check a PoseTrack17/18/21 folder before training on it, and convert detector boxes.

kpdiff reads the frames that the annotation files name, relative to the dataset root, and takes
the ``δ`` temporal neighbours of a key frame from the file's frame list (not from the disk).
``check`` verifies exactly that: every frame a clip window would read exists, the frame lists
have no gaps, labelled persons have head boxes (the evaluation needs them) and, given a detector
file, that its boxes find their frames (boxes that match nothing give 0 AP, not an error)::

    python benchmarks/posetrack/prepare.py check /data/posetrack18 --split val --boxes DETS.json
    python benchmarks/posetrack/prepare.py convert-boxes COCO_DETS.json --data /data/posetrack18 \\
        --split val --out /data/posetrack18/val_boxes_dcpose.json

``convert-boxes`` turns COCO-detection records (``image_id``, ``bbox``, ``score``) into the
DCPose layout (``image_name``, ``bbox`` xywh, ``score``), looking the image names up in the
ground truth; ``--box-format xyxy`` converts corner boxes. Exit codes: 0 fine, 1 ``check``
found errors, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kpdiff.data.checks import (
    box_coverage,
    box_mismatch_message,
    missing_frames_message,
    missing_window_frames,
    naming_style,
)
from kpdiff.data.clips import clip_indices
from kpdiff.data.detections import convert_boxes, read_detections
from kpdiff.data.posetrack import detect_format, read_posetrack
from kpdiff.data.schemas import get_schema
from kpdiff.data.structures import VideoAnnotation
from kpdiff.errors import KpdiffInputError

__all__ = [
    "CheckReport",
    "annotation_files",
    "box_coverage",
    "check_dataset",
    "convert_boxes",
    "missing_window_frames",
    "naming_style",
]


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: facts, warnings and errors, one line each."""

    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def text(self) -> str:
        lines = [f"  {line}" for line in self.info]
        lines += [f"  WARNING: {line}" for line in self.warnings]
        lines += [f"  ERROR: {line}" for line in self.errors]
        lines.append("  result: " + ("OK" if self.ok else f"{len(self.errors)} error(s)"))
        return "\n".join(lines)


def annotation_files(root: str | Path, split: str) -> list[Path]:
    """The annotation ``.json`` files kpdiff's reader picks for ``split`` under ``root``.

    Same order as :func:`kpdiff.data.posetrack.read_posetrack`: ``annotations/<split>/``
    (PoseTrack17/18), ``posetrack_data/<split>/`` (PoseTrack21), ``<split>/``, the root itself.
    """
    p = Path(root)
    if p.is_file():
        return [p]
    for folder in (p / "annotations" / split, p / "posetrack_data" / split, p / split, p):
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if files:
            return files
    return []


def fingerprint(files: Sequence[Path]) -> str:
    """A short hash of the annotation files' names and sizes, to record with results."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def _window_paths(videos: Sequence[VideoAnnotation], root: Path, delta: int, edge: str) -> set:
    paths = set()
    for video in videos:
        n = len(video.frames)
        for pos, frame in enumerate(video.frames):
            if frame.is_labeled:
                for i in clip_indices(pos, n, delta, edge):  # type: ignore[arg-type]
                    paths.add(str(root / video.frames[i].image_path))
    return paths


def check_dataset(
    root: str | Path,
    *,
    split: str = "val",
    boxes: str | Path | None = None,
    delta: int = 2,
    edge: str = "clamp",
    min_score: float = 0.2,
    schema: str = "posetrack",
) -> CheckReport:
    """Check that kpdiff can train and evaluate on ``root``'s ``split`` (see the module doc).

    Args:
        root: the dataset root (or a folder of annotation files).
        split: the split to check. Default ``"val"``.
        boxes: a detector-box file to check against the frames, or ``None``.
        delta: temporal neighbours per side whose frames must exist. Default ``2`` (DiffPose).
        edge: ``"clamp"`` or ``"repeat"`` (the clip pipeline's edge policy). Default ``"clamp"``.
        min_score: detector boxes below this score are dropped. Default ``0.2``.
        schema: keypoint schema name. Default ``"posetrack"``.

    Returns:
        A :class:`CheckReport`; bad input (no such folder, unreadable files) raises
        :class:`~kpdiff.errors.KpdiffInputError` instead.
    """
    rep = CheckReport()
    root = Path(root)
    if not root.exists():
        raise KpdiffInputError(f"{root}: no such folder")
    files = annotation_files(root, split)
    if not files:
        raise KpdiffInputError(
            f"{root}: no annotation .json files in annotations/{split}/, posetrack_data/{split}/, "
            f"{split}/ or the folder itself"
        )
    base = root if root.is_dir() else root.parent
    fmt = detect_format(files[0])
    videos = read_posetrack(root, split=split, schema=get_schema(schema))
    frames = [f for v in videos for f in v.frames]
    labelled = [f for f in frames if f.is_labeled]
    persons = sum(len(f.persons) for f in labelled)
    rep.info.append(
        f"annotations: {len(files)} file(s) in {files[0].parent}, format {fmt} (first file), "
        f"fingerprint {fingerprint(files)}"
    )
    rep.info.append(
        f"{len(videos)} videos, {len(frames)} frames listed, {len(labelled)} labelled, "
        f"{persons} persons on labelled frames (record these counts with your results: label "
        "versions differ in them)"
    )
    if not labelled:
        rep.errors.append("no labelled frame: nothing to train on or evaluate")

    no_head = sum(
        1
        for f in labelled
        for p in f.persons
        if p.head_box is None and np.any(np.asarray(p.keypoints)[:, 2] > 0)
    )
    if no_head:
        msg = (
            f"{no_head} labelled persons with joints have no head box (bbox_head / x1..y2): the "
            "PoseTrack AP cannot score them"
        )
        (rep.errors if split != "train" else rep.warnings).append(msg)

    styles = Counter(naming_style([Path(f.image_path).name for f in v.frames]) for v in videos)
    rep.info.append(
        "frame names: " + "; ".join(f"{n} video(s) {s}" for s, n in styles.most_common(4))
    )
    gappy = []
    for v in videos:
        idx = np.array([f.frame_index for f in v.frames])
        if len(idx) > 1 and np.any(np.diff(idx) != 1):
            gappy.append(v.name)
    if gappy:
        rep.warnings.append(
            f"{len(gappy)} video(s) list frames with gaps (e.g. {gappy[0]}): kpdiff takes the "
            "temporal neighbours from the annotation file's frame list, so they would be more "
            "than one frame apart. PoseTrack18/21 files and the official PoseTrack17 annolist "
            "files list every frame; files that keep only labelled frames do not."
        )
    single = sum(len(v.frames) == 1 for v in videos)
    if single:
        rep.info.append(
            f"{single} video(s) list a single frame: their clip windows repeat the key frame"
        )

    paths = _window_paths(videos, base, delta, edge)
    missing = sorted(p for p in paths if not Path(p).is_file())
    if missing:
        rep.errors.append(missing_frames_message(missing, len(paths)))
    else:
        rep.info.append(
            f"all {len(paths)} frames of the clip windows (δ = {delta}, edge = {edge}) exist"
        )

    if boxes is not None:
        dets = read_detections(boxes, min_score=min_score)
        n_lab, n_with, n_boxes = box_coverage(videos, dets)
        rep.info.append(
            f"detector boxes {boxes}: {sum(len(b) for b in dets.values())} with score >= "
            f"{min_score}; {n_boxes} on {n_with} of {n_lab} labelled frames"
        )
        if n_lab and n_with == 0:
            rep.errors.append(box_mismatch_message(videos, dets, str(boxes)))
        elif n_with < n_lab:
            rep.warnings.append(
                f"{n_lab - n_with} labelled frames have no detector box: their persons count "
                "as missed"
            )
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare.py", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    c = sub.add_parser("check", help="check a dataset root for kpdiff")
    c.add_argument("root", help="dataset root (PoseTrack17/18/21 layout)")
    c.add_argument("--split", default="val", help="split to check (default: val)")
    c.add_argument("--boxes", default=None, help="detector-box JSON to check (DCPose or COCO)")
    c.add_argument("--delta", type=int, default=2, help="temporal neighbours per side (default 2)")
    c.add_argument("--edge", default="clamp", choices=["clamp", "repeat"])
    c.add_argument("--min-box-score", type=float, default=0.2)
    v = sub.add_parser("convert-boxes", help="COCO-detection boxes -> DCPose layout")
    v.add_argument("src", help="COCO-detection JSON (image_id, bbox, score)")
    v.add_argument("--data", required=True, help="dataset root whose ground truth names images")
    v.add_argument("--split", default="val")
    v.add_argument("--out", required=True, help="output JSON (DCPose layout)")
    v.add_argument("--box-format", default="xywh", choices=["xywh", "xyxy"])
    v.add_argument("--min-score", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            print(f"checking {args.root} (split {args.split})")
            report = check_dataset(
                args.root, split=args.split, boxes=args.boxes, delta=args.delta,
                edge=args.edge, min_score=args.min_box_score,
            )  # fmt: skip
            print(report.text())
            return 0 if report.ok else 1
        n, unknown = convert_boxes(
            args.src, args.out, data=args.data, split=args.split,
            box_format=args.box_format, min_score=args.min_score,
        )  # fmt: skip
        print(f"{n} boxes written to {args.out}")
        if unknown:
            print(f"{unknown} records skipped: their image_id is not in {args.data} ({args.split})")
        return 0
    except (KpdiffInputError, OSError) as err:
        print(f"prepare.py {args.command}: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
