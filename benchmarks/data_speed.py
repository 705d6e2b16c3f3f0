"""How fast is the data side? Synthetic build time and top-down clip throughput on one core.

Builds a small synthetic set (fresh, in a temporary folder), then times the training clip
pipeline (augmentation on, ``δ = 2``: 5 frames of 256×192 per item) in a single process with
``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``, in dataset order (neighbouring
clips share decoded frames through the LRU cache) and in shuffled order (as a training sampler
reads it). Run::

    python benchmarks/data_speed.py [--videos 20] [--frames 30] [--items 600] [--delta 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch

from kpdiff.data.clips import AugmentConfig, ClipConfig, TopDownClipDataset
from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.synthetic import SyntheticConfig, build_synthetic_dataset


def _clips_per_second(dataset: TopDownClipDataset, order: list[int], repeats: int) -> float:
    """Best of ``repeats`` passes over ``order`` (the machine may be shared), in items/s."""
    best = float("inf")
    for _ in range(repeats):
        dataset._cache._frames.clear()  # every pass starts cold
        start = time.perf_counter()
        for i in order:
            dataset[i]
        best = min(best, time.perf_counter() - start)
    return len(order) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=20, help="videos per split (default 20)")
    parser.add_argument("--frames", type=int, default=30, help="frames per video (default 30)")
    parser.add_argument("--items", type=int, default=600, help="clips timed (default 600)")
    parser.add_argument("--delta", type=int, default=2, help="neighbours per side (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, best kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        config = SyntheticConfig(num_videos=args.videos, frames_per_video=args.frames)
        start = time.perf_counter()
        root = build_synthetic_dataset(Path(tmp) / "synthetic", config, splits=("train",))
        build_s = time.perf_counter() - start
        frames = args.videos * args.frames
        print(f"synthetic build: {args.videos} videos x {args.frames} frames in {build_s:.2f} s")
        print(f"  ({frames / build_s:.0f} frames/s, {config.image_size[1]}x{config.image_size[0]})")

        videos = read_posetrack(root / "annotations" / "train")
        dataset = TopDownClipDataset.from_videos(
            videos, root, config=ClipConfig(delta=args.delta), augment=AugmentConfig()
        )
        n = min(args.items, len(dataset))
        torch.manual_seed(0)
        shuffled = torch.randperm(len(dataset))[:n].tolist()
        sequential = _clips_per_second(dataset, list(range(n)), args.repeats)
        random = _clips_per_second(dataset, shuffled, args.repeats)
        t = 2 * args.delta + 1
        print(f"clip pipeline (train, augmentation on, T={t}, 256x192), 1 thread:")
        print(f"  dataset order: {sequential:.0f} clips/s per core")
        print(f"  shuffled:      {random:.0f} clips/s per core")


if __name__ == "__main__":
    main()
