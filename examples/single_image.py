"""Single-image pose with diffusion: DiffPose with δ = 0 and another timm backbone.

With ``delta=0`` every clip is one frame (T = 1): the spatio-temporal layers attend over the key
frame's tokens only, and the model is an image pose estimator whose decoder is a diffusion
model. The backbone is a timm ViT with patch 16 or any timm model with a stride-16 stage, such
as a CNN (here DeiT-Tiny, cut to 3 blocks so that it trains on a CPU). The script

1. trains the model briefly on the synthetic PoseTrack-layout set with kpdiff's training engine
   (the same code as ``kpdiff train``);
2. evaluates it with one hypothesis and one step, and with N = 10 hypotheses and 4 steps;
3. predicts poses on single images from person boxes (validation frames and their detector
   boxes, or your own ``--image`` with ``--box``) and writes them with the skeletons drawn.

    python examples/single_image.py            # about 1.5 minutes on 2 CPU cores
    python examples/single_image.py --quick    # a seconds-long smoke run
    python examples/single_image.py --checkpoint outputs/single_image/run/best \\
        --image photo.jpg --box 40 20 120 260   # x y w h of the person
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import default_collate

from kpdiff import DiffPose, DiffPoseOverrides
from kpdiff.data import (
    POSETRACK,
    AugmentConfig,
    SyntheticConfig,
    TopDownClipDataset,
    boxes_for_frame,
    crop_to_image,
    read_detections,
)
from kpdiff.drawing import draw_poses
from kpdiff.engine import ExperimentConfig, evaluate_model, train
from kpdiff.engine.data import prepare_datasets

BACKBONE = "deit_tiny_patch16_224"  # a ViT with patch 16; CNNs too, see the tutorial


def experiment(out: Path, *, quick: bool, threads: int = 1) -> ExperimentConfig:
    """The tiny preset with δ = 0 and a DeiT backbone, on the synthetic set, sized for a CPU."""
    cfg = ExperimentConfig()
    cfg.model.preset = "diffpose-tiny"  # 128×96 crops → 32×24 heatmaps
    cfg.model.overrides = DiffPoseOverrides(
        delta=0, backbone=BACKBONE, backbone_kwargs={"depth": 3}
    )
    cfg.data.root = str(out / "data")
    videos, frames = (2, 6) if quick else (36, 8)
    cfg.data.synthetic = SyntheticConfig(num_videos=videos, frames_per_video=frames)
    cfg.data.augment = AugmentConfig(rotation=30, scale_range=(0.75, 1.25))  # milder: short run
    cfg.optim.lr, cfg.optim.batch_size = 1e-3, (8 if quick else 16)
    cfg.optim.epochs, cfg.optim.milestones = (1, ()) if quick else (14, (11,))
    cfg.eval.max_clips = 8 if quick else 300
    cfg.runtime.output_dir = str(out / "run")
    cfg.runtime.progress, cfg.runtime.log_every = False, 100
    cfg.runtime.threads = threads  # one thread: on a shared 2-core machine far faster than two
    return cfg


@torch.no_grad()
def predict_image(
    model: DiffPose, image: str | Path, boxes: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Poses of the persons in ``boxes [P, 4]`` (xywh) on one image.

    Returns ``keypoints [P, K, 3]`` (x, y in image pixels, score) and ``spread [P, K]`` (the
    ensemble's disagreement, image pixels). A video model (δ > 0) gets the image repeated as its
    clip: neighbours beyond a video's ends are clamped to it.
    """
    config = model.data_config()
    items = TopDownClipDataset.from_boxes([image], boxes, key=0, schema=POSETRACK, config=config)
    batch = default_collate([items[i] for i in range(len(items))])  # clip [P, 1, 3, 128, 96]
    result = model.predict(batch["clip"], generator=torch.Generator().manual_seed(seed))
    keypoints = torch.cat([result.keypoints, result.scores[..., None]], dim=-1)
    crop_pixel = np.abs(np.linalg.det(batch["inverse_affine"].double().numpy()[:, :, :2])) ** 0.5
    return crop_to_image(keypoints, batch).numpy(), result.spread.numpy() * crop_pixel[:, None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/single_image", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--checkpoint", help="a save_pretrained folder: skip the training")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--image", help="predict on this image instead of validation frames")
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        help="person box on --image (default: the whole image)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)  # also for the evaluation, outside the engine

    if args.image is None or args.checkpoint is None:
        cfg = experiment(out, quick=args.quick, threads=args.threads)
        datasets = prepare_datasets(cfg)  # builds the synthetic set on first use
        print(f"{len(datasets.train)} training crops, {len(datasets.val)} validation crops")
    if args.checkpoint:
        model = DiffPose.from_pretrained(args.checkpoint)
    else:
        # no validation inside training (evaluated below): the final weights go to run/best
        result = train(cfg, datasets=dataclasses.replace(datasets, val=None))
        print(f"trained {result.steps} steps in {result.seconds:.0f} s")
        model = DiffPose.from_pretrained(out / "run" / "best")
    print(
        f"DiffPose, delta = {model.config.delta}, backbone {model.config.backbone}: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )

    summary: dict = {}
    if args.image is None:  # evaluate, then pick a few validation frames
        sweep = evaluate_model(
            model,
            datasets.val,
            datasets.val_videos,
            sweep=[(1, 1), (10, 4)],
            max_clips=cfg.eval.max_clips,
            batch_size=32,
        )
        assert sweep is not None
        print(sweep.table())
        for (n, s), ap in sweep.ap.items():
            error = sweep.spread_error[(n, s)][1]
            summary[f"N{n}_steps{s}"] = {
                "columns": ap.columns,
                "error_px_mean": float(error.mean()),
            }
            print(f"N = {n}, steps = {s}: mean keypoint error {error.mean():.1f} px")
        root = Path(cfg.data.root)
        detections = read_detections(root / "detections" / "val_boxes.json")
        frames = [f for v in datasets.val_videos for f in v.frames[::12] if f.persons][:4]
        images = [(root / f.image_path, boxes_for_frame(detections, f)) for f in frames]
    else:
        image = cv2.imread(args.image)
        if image is None:
            parser.error(f"--image: cannot read {args.image}")
        height, width = image.shape[:2]
        box = args.box or (0.0, 0.0, float(width), float(height))
        images = [(Path(args.image), np.array([[*box, 1.0]]))]

    (out / "images").mkdir(parents=True, exist_ok=True)
    for path, boxes in images:
        boxes = boxes[boxes[:, 4] >= 0.2, :4]  # detector boxes scoring under 0.2 are dropped
        if not len(boxes):
            continue
        poses, spread = predict_image(model, path, boxes)
        target = out / "images" / f"{path.parent.name}_{path.name}"
        cv2.imwrite(str(target), draw_poses(cv2.imread(str(path)), poses, POSETRACK, spread=spread))
        print(
            f"{target}: {len(poses)} box(es), mean joint score "
            f"{poses[..., 2].mean():.2f}, mean spread {spread.mean():.2f} px"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
