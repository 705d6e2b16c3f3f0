"""``kpdiff predict``'s speed on a real video, and the overlay of the "Pose on your own video" page.

Runs :class:`~kpdiff.engine.predict.VideoPredictor` on the 10-frame PoseTrack18 clip of
``../shared/data/posetrack18_sample`` (1280×720), read as the MP4 (streamed with PyAV) and as
the folder of JPEGs, with person boxes drawn by hand on its first and last frames and
interpolated between (no detector weights can be downloaded on the development machine), for
N = 1 / 10 and 1 / 4 DDIM steps, and prints frames/s (poses, tracking and reading included; one
warm-up run first). It also times the two default torchvision person detectors per frame,
untrained (their forward does the same work as trained ones, up to how many proposals survive).

    python benchmarks/video_speed.py [--checkpoint RUN/best] [--gif docs/assets/video/overlay.gif]

Without ``--checkpoint`` an untrained ``diffpose-tiny`` is timed (same cost as a trained one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kpdiff.diffpose import DiffPose
from kpdiff.engine.predict import VideoPredictor, list_frames, render_video

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "posetrack18_sample" / "videos" / "000001_mpiinew_test"
# xywh in the 1280x720 frames: three players on frame 0 and on frame 9, drawn by hand.
FIRST = np.array([[356, 270, 194, 310], [610, 260, 210, 200], [600, 400, 240, 125]], float)
LAST = np.array([[244, 310, 176, 290], [450, 286, 120, 220], [396, 436, 250, 116]], float)


def boxes_file(path: Path, frames: int = 10) -> Path:
    """COCO-layout boxes (``image_id`` = frame index), linearly interpolated per player."""
    records = []
    for i in range(frames):
        t = i / (frames - 1)
        for box in (1 - t) * FIRST + t * LAST:
            records.append({"image_id": i, "bbox": box.round(1).tolist(), "score": 0.9})
    path.write_text(json.dumps(records))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a save_pretrained folder")
    ap.add_argument("--gif", type=Path, default=None, help="write the N=10, 4-step overlay")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if not CLIP.is_dir():
        raise SystemExit(f"the PoseTrack18 sample clip is not at {CLIP}")
    torch.manual_seed(0)
    model = (
        DiffPose.from_pretrained(a.checkpoint)
        if a.checkpoint
        else DiffPose.from_preset("diffpose-tiny")
    )
    print(f"model: {a.checkpoint or 'diffpose-tiny, untrained'} ({model.config.input_size}, "
          f"delta {model.config.delta}); torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        print("| input | N | steps | frames/s | poses |")
        print("|---|---|---|---|---|")
        for source in (CLIP / f"{CLIP.name}.mp4", CLIP):
            boxes = boxes_file(Path(tmp) / "boxes.json", len(list_frames(source)))
            for n, steps in ((1, 1), (1, 4), (10, 1), (10, 4)):
                predictor = VideoPredictor(model, num_samples=n, steps=steps)
                predictor(source, boxes)  # warm-up
                best = float("inf")
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    result = predictor(source, boxes)
                    best = min(best, time.perf_counter() - t0)
                kind = "MP4 (PyAV)" if source.is_file() else "JPEG folder"
                print(f"| {kind} | {n} | {steps} | {len(result.frames) / best:.1f} | "
                      f"{len(result.persons)} |")  # fmt: skip
                if a.gif and (n, steps) == (10, 4) and source.is_dir():
                    a.gif.parent.mkdir(parents=True, exist_ok=True)
                    render_video(result, a.gif, fps=5, max_width=640)
                    print(f"overlay: {a.gif}")
    from kpdiff.data.clips import read_frame
    from kpdiff.detection import PersonDetector

    frames = [read_frame(p) for p in sorted(CLIP.glob("*.jpg"))[:4]]
    print("| detector (untrained weights) | s/frame (1280x720) |")
    print("|---|---|")
    for name in ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2"):
        detector = PersonDetector(name, "random", min_score=0.0, batch_size=1)
        list(detector.detect(frames[:1]))
        t0 = time.perf_counter()
        list(detector.detect(frames))
        print(f"| {name} | {(time.perf_counter() - t0) / len(frames):.2f} |")


if __name__ == "__main__":
    main()
