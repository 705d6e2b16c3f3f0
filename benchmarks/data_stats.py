"""The statistics that set the scale of the PoseTrack metric, on any PoseTrack-layout dataset.

PCKh counts a joint as correct within ``0.5 × headSize`` with ``headSize = 0.6 × diag(bbox_head)``,
so how large head boxes are relative to the body sets how strict the metric is. This script
prints, per annotated person, the head size over the torso length (mid-shoulder to mid-hip) and
over the person's height (head top to the lower of the ankles), as medians and quartiles::

    python benchmarks/data_stats.py ../shared/data/posetrack18_sample --split val
    python benchmarks/data_stats.py outputs/demo/data --split val --json stats.json

The synthetic generator's ``head_scale`` is calibrated on the first line's output
(``docs/data.md``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.schemas import get_schema
from kpdiff.io import write_json_atomic
from kpdiff.metrics import head_size


def scale_statistics(root: str | Path, split: str = "val") -> dict[str, dict[str, float]]:
    """Head-size ratios of every ground-truth person of ``root``'s ``split`` (PoseTrack joints).

    Returns:
        ``{"head_over_torso": {...}, "head_over_height": {...}}``, each with ``n``, ``median``,
        ``q25`` and ``q75``; persons lacking the joints a ratio needs are left out of it.
    """
    schema = get_schema("posetrack")
    idx = {name: schema.index(name) for name in schema.keypoints}
    torso, height = [], []
    for video in read_posetrack(root, split=split, schema=schema):
        for frame in video.frames:
            for person in frame.persons:
                if person.head_box is None:
                    continue
                head = head_size(person.head_box)
                kp = person.keypoints
                seen = kp[:, 2] > 0

                def has(*names: str, kp=kp, seen=seen) -> bool:
                    return all(seen[idx[n]] for n in names)

                def mid(a: str, b: str, kp=kp) -> np.ndarray:
                    return (kp[idx[a], :2] + kp[idx[b], :2]) / 2

                if has("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
                    length = float(
                        np.linalg.norm(
                            mid("left_shoulder", "right_shoulder") - mid("left_hip", "right_hip")
                        )
                    )
                    if length > 0:
                        torso.append(head / length)
                if has("head_top") and (has("left_ankle") or has("right_ankle")):
                    ankles = [kp[idx[n], 1] for n in ("left_ankle", "right_ankle") if has(n)]
                    tall = max(ankles) - kp[idx["head_top"], 1]
                    if tall > 0:
                        height.append(head / tall)
    return {"head_over_torso": _summary(torso), "head_over_height": _summary(height)}


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    q25, med, q75 = np.percentile(values, [25, 50, 75])
    return {"n": len(values), "median": round(float(med), 3),
            "q25": round(float(q25), 3), "q75": round(float(q75), 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (PoseTrack17/18/21 layout)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    stats = scale_statistics(args.root, args.split)
    for name, s in stats.items():
        print(f"{name:17s} n={s['n']:4d}  median {s['median']:.3f}  "
              f"(quartiles {s['q25']:.3f}–{s['q75']:.3f})")  # fmt: skip
    if args.json:
        write_json_atomic({"root": str(args.root), "split": args.split, **stats}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
