"""Time :func:`kpdiff.metrics.posetrack_ap` on a synthetic set the size of PoseTrack18 val.

170 videos of 60 frames, 30 of them labelled (every other frame), 3-8 people per labelled frame
with head boxes, a quarter of the frames with an ignore region; predictions on every frame are
noisy copies of the people (some missed) plus 0-3 false positives. Target: under 2 s.

    python benchmarks/posetrack/eval_speed.py [--videos 170] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.metrics import posetrack_ap

K = 17


def _person(rng: np.random.Generator, center: np.ndarray, track: int) -> PersonAnnotation:
    kp = np.zeros((K, 3))
    kp[:, :2] = center + rng.normal(0.0, 40.0, (K, 2))
    kp[:, 2] = rng.random(K) > 0.15
    kp[3:5] = 0.0  # ears are never labelled
    kp[kp[:, 2] == 0] = 0.0
    x, y = center - (15.0, 80.0)
    return PersonAnnotation(keypoints=kp, head_box=np.array([x, y, x + 30, y + 36]), track_id=track)


def _prediction(rng: np.random.Generator, gt: PersonAnnotation, track: int) -> PersonAnnotation:
    kp = gt.keypoints.copy()
    kp[:, :2] += rng.normal(0.0, rng.choice([1.0, 3.0, 8.0]), (K, 2))
    kp[:, 2] = rng.random(K)
    kp[3:5] = 0.0
    return PersonAnnotation(keypoints=kp, track_id=track)


def make_dataset(
    n_videos: int = 170, n_frames: int = 60, seed: int = 0
) -> tuple[list[VideoAnnotation], list[VideoAnnotation]]:
    """``(gt, pred)``: ``n_videos`` synthetic videos of ``n_frames`` frames (half labelled)."""
    rng = np.random.default_rng(seed)
    gt, pred = [], []
    for v in range(n_videos):
        gv, pv = VideoAnnotation(f"{v:06d}_synth"), VideoAnnotation(f"{v:06d}_synth")
        for f in range(n_frames):
            path, iid = f"images/val/{v:06d}_synth/{f:06d}.jpg", v * 10_000 + f
            labeled = f % 2 == 0
            centers = rng.uniform((100, 150), (1180, 620), (rng.integers(3, 9), 2))
            people = [_person(rng, c, t) for t, c in enumerate(centers)]
            regions = [rng.uniform(0, 720, (6, 2))] if rng.random() < 0.25 else []
            gv.frames.append(FrameAnnotation(path, f, iid, labeled, people if labeled else [],
                                             regions if labeled else []))  # fmt: skip
            preds = [_prediction(rng, p, t) for t, p in enumerate(people) if rng.random() < 0.9]
            for t in range(rng.integers(0, 4)):  # false positives
                fp = np.column_stack([rng.uniform(0, 1280, (K, 2)), 0.5 * rng.random(K)])
                preds.append(PersonAnnotation(keypoints=fp, track_id=100 + t))
            pv.frames.append(FrameAnnotation(path, f, iid, labeled, preds))
        gt.append(gv)
        pred.append(pv)
    return gt, pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=170)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    gt, pred = make_dataset(a.videos, a.frames, a.seed)
    labelled = sum(f.is_labeled for v in gt for f in v.frames)
    people = sum(len(f.persons) for v in gt for f in v.frames)
    dets = sum(len(f.persons) for v in pred for f in v.frames)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        result = posetrack_ap(gt, pred)
        times.append(time.perf_counter() - t0)
    print(f"{a.videos} videos, {labelled} labelled frames, {people} GT people, {dets} predictions")
    print(result.table())
    print(f"posetrack_ap: best {min(times):.3f} s, median {np.median(times):.3f} s "
          f"over {a.repeats} runs (target < 2 s)")  # fmt: skip


if __name__ == "__main__":
    main()
