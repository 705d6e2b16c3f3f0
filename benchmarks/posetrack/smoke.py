"""The whole pipeline on real PoseTrack18 files: the sample in ``../shared/data``.

    python benchmarks/posetrack/smoke.py [--data DIR] [--checkpoint DIR] [-n 1 10] [--steps 1 4]

Runs on ``../shared/data/posetrack18_sample`` (three labelled PoseTrack18 val frames and
COCO-format detector boxes; ``--data`` or ``KPDIFF_POSETRACK18_SAMPLE`` elsewhere): reading,
clips from ground-truth and detector boxes, an untrained ``diffpose-tiny`` (or
``--checkpoint``), decoding to image coordinates, the AP and the prediction files, which are
read back and scored again. It checks plumbing, not accuracy, and exits 0 with a message when
the sample is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE", REPO.parent / "shared" / "data" / "posetrack18_sample"
    )
)
SAMPLE_BOXES = "annotations/test_posetrack18_human_detections.json"


def cmd_smoke(args: argparse.Namespace) -> int:
    root = Path(args.data)
    if not (root / "annotations").is_dir():
        print(f"PoseTrack18 sample not found at {root} (set --data or KPDIFF_POSETRACK18_SAMPLE); "
              "smoke test skipped.")  # fmt: skip
        return 0
    start = time.perf_counter()
    import torch

    from kpdiff.data.checks import preflight, window_frames
    from kpdiff.data.clips import TopDownClipDataset, clip_indices
    from kpdiff.data.detections import convert_boxes, read_detections
    from kpdiff.data.posetrack import detect_format, list_annotation_files, read_posetrack
    from kpdiff.data.schemas import get_schema
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.evaluate import evaluate_model, write_predictions
    from kpdiff.engine.evaluate_checkpoint import resolve_checkpoint
    from kpdiff.errors import KpdiffInputError
    from kpdiff.metrics import posetrack_ap

    schema = get_schema("posetrack")
    print(f"kpdiff PoseTrack smoke test on {root}")
    files = list_annotation_files(root, "val")
    videos = read_posetrack(root, split="val", schema=schema)
    labelled = [f for v in videos for f in v.frames if f.is_labeled]
    print(f"  ground truth: {len(videos)} videos, {len(labelled)} labelled frames, "
          f"{sum(len(f.persons) for f in labelled)} persons ({detect_format(files[0])} files, "
          "kpdiff's reader)")  # fmt: skip
    pt17 = root / "annotations_pt17" / "val"
    if pt17.is_dir():
        v17 = read_posetrack(pt17, schema=schema)
        n17 = sum(len(f.persons) for v in v17 for f in v.frames if f.is_labeled)
        print(f"  PoseTrack17 copy ({pt17.relative_to(root)}): {len(v17)} videos, {n17} persons "
              f"({detect_format(next(pt17.glob('*.json')))} reader)")  # fmt: skip

    torch.manual_seed(args.seed)
    if args.checkpoint:
        ckpt = resolve_checkpoint(args.checkpoint)
        model = DiffPose.from_pretrained(ckpt)
        print(f"  model: {ckpt}")
        trained = True
    else:
        model = DiffPose.from_preset("diffpose-tiny", num_keypoints=schema.num_keypoints)
        print(f"  model: diffpose-tiny, UNTRAINED (random weights, seed {args.seed})")
        trained = False
    c = model.config
    print(f"  δ = {c.delta} ({2 * c.delta + 1} frames per clip), input {tuple(c.input_size)}")

    boxes_file = root / SAMPLE_BOXES
    sets = {
        boxes: TopDownClipDataset.from_videos(
            videos, root, detections=None if boxes == "gt" else boxes, schema=schema,
            config=model.data_config(),
        )
        for boxes in ("gt", boxes_file)
    }  # fmt: skip
    gt_set, det_set = sets.values()
    s = gt_set.samples[0]
    window = clip_indices(s.key, len(s.frame_paths), c.delta, "clamp")
    print(
        f"  temporal window, edge = clamp: video {s.video} lists {len(s.frame_paths)} "
        f"frame(s): key frame {s.key} → clip frames {window}, no missing neighbour is read"
    )
    raw = json.loads(boxes_file.read_text())
    print(
        f"  clips: {len(gt_set)} from ground-truth boxes, {len(det_set)} from detector boxes "
        f"({len(raw)} COCO-format boxes in {SAMPLE_BOXES}, {len(det_set)} with score >= 0.2)"
    )
    errors = [e for boxes, ds in sets.items() for e in preflight(ds, videos, boxes)]
    if errors:
        raise KpdiffInputError("\n".join(errors))
    total = len(window_frames(gt_set) | window_frames(det_set))
    print(f"  every one of the {total} frame files the clip windows read exists")
    with tempfile.TemporaryDirectory() as tmp:
        dcpose = Path(tmp) / "boxes_dcpose.json"
        n, _ = convert_boxes(boxes_file, dcpose, data=root, split="val")
        a, b = read_detections(boxes_file), read_detections(dcpose)
        same = _same_boxes(a, b, labelled)
        print(
            f"  DCPose-layout copy (prepare.py convert-boxes): {n} boxes, matched by "
            f"'<video>/<file>': {'same boxes per frame' if same else 'DIFFERENT boxes'}"
        )

        grid = args.grid
        out = Path(args.out) if args.out else Path(tmp) / "out"
        for title, ds in (("ground-truth boxes", gt_set), ("detector boxes", det_set)):
            result = evaluate_model(model, ds, videos, sweep=grid, batch_size=args.batch_size,
                                    seed=args.seed, schema=schema)  # fmt: skip
            assert result is not None
            print(f"\nPoseTrack18 sample, {title} ({result.clips} clips, {result.seconds:.1f} s)")
            print(result.table())
            key = grid[-1]
            folder = out / ("gt" if ds is gt_set else "det") / f"pred_n{key[0]}_steps{key[1]}"
            write_predictions(result.predictions[key], folder, schema)
            again = posetrack_ap(videos, read_posetrack(folder, predictions=True, schema=schema),
                                 schema)  # fmt: skip
            mean, mean2 = result.ap[key].columns["Mean"], again.columns["Mean"]
            same = mean == mean2 or (math.isnan(mean) and math.isnan(mean2))
            print(
                f"prediction files (PoseTrack18 format) re-read from disk and scored again: "
                f"Mean {mean2:.1f} ({'identical' if same else 'DIFFERENT'})"
            )
            if not same:
                raise KpdiffInputError(f"predictions re-read from {folder} score differently")
        if args.out:
            print(f"\nprediction files in {out}")
    print()
    note = (
        "The model is untrained: APs near 0 are expected. This run checks that reading, clip "
        "cutting, the model, decoding to image coordinates, the PoseTrack AP and the prediction "
        "files work on real PoseTrack files; it measures nothing about accuracy. "
        if not trained
        else ""
    )
    note += "With 3 labelled frames, no number here is comparable to the paper's."
    print(textwrap.fill(note, width=100))
    print(f"smoke OK ({time.perf_counter() - start:.1f} s)")
    return 0


def _same_boxes(a: dict, b: dict, frames: list) -> bool:
    from kpdiff.data.detections import boxes_for_frame

    return all(
        boxes_for_frame(a, f).shape == boxes_for_frame(b, f).shape
        and (boxes_for_frame(a, f) == boxes_for_frame(b, f)).all()
        for f in frames
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="smoke.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(DEFAULT_SAMPLE),
        metavar="DIR",
        help=f"the sample folder (default: {DEFAULT_SAMPLE})",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="a save_pretrained folder instead of an untrained diffpose-tiny",
    )
    p.add_argument(
        "-n",
        "--num-samples",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="ensemble sizes (default: N=1 with 1 step, N=10 with 4)",
    )
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="DDIM step counts (grid with -n)",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="keep the prediction files here")
    args = p.parse_args(argv)  # fmt: skip
    if args.num_samples is None and args.steps is None:
        args.grid = [(1, 1), (10, 4)]
    else:
        args.grid = [(n, t) for n in args.num_samples or [10] for t in args.steps or [4]]
    args.batch_size, args.seed = 64, 0
    from kpdiff.errors import KpdiffInputError

    try:
        return cmd_smoke(args)
    except (KpdiffInputError, OSError) as err:
        print(f"smoke.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
