"""``kpdiff predict`` on MP4 videos end to end: track-id stability and streaming memory.

1. Tracking: synthetic validation videos (people whose ground-truth track ids are known) are
   written as H.264 MP4s; ``kpdiff predict VIDEO.mp4`` runs as a child process on each, with
   the synthetic fake detector's boxes (COCO layout, ``--boxes``) or, with
   ``--detector-weights``, with torchvision's detector on the frames (no ``--boxes``). The
   predicted people are matched to the ground truth per frame (box IoU >= 0.5, Hungarian) and
   the identity switches are counted as in CLEAR-MOT: a ground-truth person matched to another
   track id than on its previous matched frame. The MP4 written is checked to be H.264.
2. Streaming: the same for one long video (the frames of a synthetic video played forwards and
   backwards to ``--long-frames`` frames) and a short one; the peak RSS of each child process
   (``wait4``) shows that memory does not grow with the video's length.

    python benchmarks/video_tracking.py [--checkpoint RUN/best] [--detector-weights PTH]
        [--long-frames 2000] [--out DIR]

Without ``--checkpoint``, an untrained ``diffpose-tiny``: the tracker follows boxes, so its id
switches and the memory do not depend on the pose model's training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from scipy.optimize import linear_sum_assignment

from kpdiff.data.clips import read_frame
from kpdiff.data.detections import read_detections
from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.synthetic import SyntheticConfig, build_synthetic_dataset
from kpdiff.tracking import box_iou
from kpdiff.video import write_video


def run_predict(video: Path, out: Path, args: list[str]) -> tuple[float, float, Path]:
    """``kpdiff predict`` as a child process: ``(seconds, peak RSS MB, PoseTrack18 file)``."""
    command = [sys.executable, "-m", "kpdiff.cli", "predict", str(video), "--out", str(out),
               "--quiet", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"kpdiff predict {video} failed")
    return seconds, usage.ru_maxrss / 1024, out / f"{video.stem}_posetrack18.json"


def id_switches(gt_file: Path, pred_file: Path) -> tuple[int, int, int]:
    """``(identity switches, matched people, ground-truth people)`` over one video."""
    (gt,) = read_posetrack(gt_file)
    (pred,) = read_posetrack(pred_file, predictions=True)
    last: dict[int, int] = {}
    switches = matched = total = 0
    for g, p in zip(gt.frames, pred.frames, strict=True):
        people = [q for q in g.persons if q.box is not None]
        total += len(people)
        if not people or not p.persons:
            continue
        iou = box_iou(np.stack([q.box for q in people]), np.stack([q.box for q in p.persons]))
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[r, c] < 0.5:
                continue
            matched += 1
            who, track = people[r].track_id, p.persons[c].track_id
            switches += who in last and last[who] != track
            last[who] = track
    return switches, matched, total


def coco_boxes(dcpose: Path, video: str, frames: list[Path], order: list[int], path: Path) -> Path:
    """The fake detector's boxes of ``frames`` in the given order, keyed by position."""
    found = read_detections(dcpose, min_score=0.0)
    records = [
        {"image_id": i, "category_id": 1, "bbox": [float(v) for v in box[:4]],
         "score": float(box[4])}
        for i, j in enumerate(order)
        for box in found.get(f"{video}/{frames[j].name}", [])
    ]  # fmt: skip
    path.write_text(json.dumps(records))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a save_pretrained folder")
    parser.add_argument("--detector-weights", default=None, help="torchvision detector .pth")
    parser.add_argument("--videos", type=int, default=4, help="synthetic videos tracked")
    parser.add_argument("--long-frames", type=int, default=2000)
    parser.add_argument("--out", default=None, help="keep the outputs here")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="kpdiff-video-tracking-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        import torch

        from kpdiff.diffpose import DiffPose

        torch.manual_seed(0)
        checkpoint = str(out / "untrained-tiny")
        DiffPose.from_preset("diffpose-tiny").save_pretrained(checkpoint)
    data = build_synthetic_dataset(
        out / "synthetic",
        SyntheticConfig(num_videos=args.videos, frames_per_video=60, seed=11),
        splits=("val",),
    )
    dcpose = data / "detections" / "val_boxes.json"
    fast = ["--checkpoint", checkpoint, "-n", "1", "--steps", "1"]

    boxes_from = f"detector {args.detector_weights}" if args.detector_weights else "fake boxes"
    print(f"tracking ({args.videos} synthetic videos x 60 frames, 320x240 MP4, {boxes_from})")
    print(f"{'video':18} {'GT people':>9} {'matched':>8} {'ID switches':>11} {'codec':>6}")
    totals = np.zeros(3, int)
    for folder in sorted((data / "images" / "val").iterdir()):
        frames = sorted(folder.glob("*.jpg"))
        mp4 = write_video((read_frame(f) for f in frames), out / "mp4" / f"{folder.name}.mp4",
                          fps=25)  # fmt: skip
        if args.detector_weights:
            extra = ["--detector-weights", args.detector_weights]
        else:
            order = list(range(len(frames)))
            boxes = coco_boxes(dcpose, folder.name, frames, order, out / f"{folder.name}.json")
            extra = ["--boxes", str(boxes)]
        _, _, pred = run_predict(mp4, out / "pred", [*fast, *extra, "--render", "mp4"])
        gt = data / "annotations" / "val" / f"{folder.name}.json"
        counts = np.array(id_switches(gt, pred))
        totals += counts
        with av.open(str(out / "pred" / f"{folder.name}_overlay.mp4")) as c:
            codec = c.streams.video[0].codec_context.name
        print(f"{folder.name:18} {counts[2]:>9} {counts[1]:>8} {counts[0]:>11} {codec:>6}")
    print(f"{'total':18} {totals[2]:>9} {totals[1]:>8} {totals[0]:>11}")

    folder = sorted((data / "images" / "val").iterdir())[0]
    frames = sorted(folder.glob("*.jpg"))
    images = [read_frame(f) for f in frames]
    cycle = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    print(f"\nstreaming (kpdiff predict, N = 1, 1 step, no overlay, {folder.name} played "
          f"back and forth)")  # fmt: skip
    print(f"{'frames':>7} {'MP4 MB':>7} {'seconds':>8} {'frames/s':>8} {'peak RSS MB':>11}")
    for length in (args.long_frames // 10, args.long_frames):
        order = [cycle[i % len(cycle)] for i in range(length)]
        name = f"long{length}"
        mp4 = write_video((images[j] for j in order), out / "mp4" / f"{name}.mp4", fps=25)
        boxes = coco_boxes(dcpose, folder.name, frames, order, out / f"{name}.json")
        seconds, rss, _ = run_predict(
            mp4, out / "pred", [*fast, "--boxes", str(boxes), "--render", "none"]
        )
        size = mp4.stat().st_size / 2**20
        print(f"{length:>7} {size:>7.1f} {seconds:>8.1f} {length / seconds:>8.1f} {rss:>11.0f}")
    print(f"\noutputs in {out}")


if __name__ == "__main__":
    main()
