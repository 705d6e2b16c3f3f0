"""Your own heatmap denoiser: a four-legged animal, a small CNN and kpdiff's lookup blocks.

DiffPose is one assembly of kpdiff's public pieces; this script builds another one, without
DiffPose, for another body:

- data: the built-in ``QUADRUPED`` schema (13 points) drawn by the synthetic video generator,
  cut into 96×128 single-frame crops (a side-view animal is wider than tall);
- condition: a small CNN on the crop → features at stride 8 → ``FeaturePyramid`` (×1, ×2),
  computed once per image;
- denoiser: ``StepRescale`` → ``HeatmapEmbed`` per scale → two ``LookupInteraction`` blocks
  (a Transformer at 12×16, a conv block at 24×32) → ``ScaleFusion`` → a 3×3 conv head;
- diffusion: ``HeatmapDiffusion`` for the training loss, ``EnsembleSampler`` for N hypotheses;
- evaluation: ``kpdiff.engine.evaluate_model`` (it only needs ``condition`` and ``predict``)
  gives the PoseTrack-style AP with the schema's eval groups and the keypoint error in pixels.

    python examples/custom_denoiser.py            # about 3.5 minutes on 2 CPU cores
    python examples/custom_denoiser.py --quick    # a seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kpdiff import (
    ConvMixer,
    EnsembleResult,
    EnsembleSampler,
    FeaturePyramid,
    GaussianHeatmapCodec,
    HeatmapDiffusion,
    HeatmapEmbed,
    LookupInteraction,
    ScaleFusion,
    StepRescale,
)
from kpdiff.data import (
    QUADRUPED,
    AugmentConfig,
    ClipConfig,
    SyntheticConfig,
    TopDownClipDataset,
    build_synthetic_dataset,
    read_posetrack,
)
from kpdiff.engine import evaluate_model

INPUT_SIZE = (96, 128)  # (H, W) of the crops; heatmaps are (24, 32) at stride 4
THREADS_HELP = "torch threads (default 1: on a shared 2-core machine far faster than 2)"


def conv_block(in_dim: int, out_dim: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv → GroupNorm → GELU (GroupNorm: the N hypotheses of a batch stay independent)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(8, out_dim),
        nn.GELU(),
    )


class SmallCNN(nn.Module):
    """Image ``[B, 3, H, W]`` → features ``[B, dim, H/8, W/8]``: three stride-2 stages."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv_block(3, 32, 2),
            ConvMixer(32),
            conv_block(32, 64, 2),
            ConvMixer(64, depth=2),
            conv_block(64, dim, 2),
            ConvMixer(dim, depth=2),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class QuadrupedPose(nn.Module):
    """A single-image heatmap diffusion model built from kpdiff's pieces.

    ``condition`` runs once per image; ``forward(x_t, t, cond)`` is the per-step denoiser
    (a :class:`kpdiff.Denoiser`); ``loss`` and ``predict`` wrap :class:`HeatmapDiffusion` and
    :class:`EnsembleSampler`. With ``condition`` and ``predict`` it can be handed to
    :func:`kpdiff.engine.evaluate_model` like a DiffPose model.
    """

    def __init__(
        self, num_keypoints: int, *, feat_dim: int = 128, dims: tuple[int, int] = (64, 32)
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.backbone = SmallCNN(feat_dim)  # 𝔽 at 12×16
        self.pyramid = FeaturePyramid(feat_dim, dims=dims, factors=(1, 2))  # 12×16, 24×32
        self.rescale = StepRescale(num_keypoints)  # x̄_t = x_t ⊙ (1 + γ(t)) + β(t)
        self.embeds = nn.ModuleList(
            [HeatmapEmbed(num_keypoints, dims[0], stride=2), HeatmapEmbed(num_keypoints, dims[1])]
        )
        out = dims[-1]
        self.blocks = nn.ModuleList(
            [
                LookupInteraction(dims[0], out_dim=out, upsample=2, mixer="transformer"),
                LookupInteraction(dims[1], out_dim=out, upsample=1, mixer="conv"),
            ]
        )
        self.fusion = ScaleFusion(out, num_scales=2)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(out, num_keypoints, 3, padding=1))

        self.diffusion = HeatmapDiffusion()  # DDIM, T = 1000, cosine, signal range ±2
        nn.init.constant_(self.head[-1].bias, -self.diffusion.signal.scale)  # start "no joint"
        self.codec = GaussianHeatmapCodec((INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4), sigma=1.5)
        self.sampler = EnsembleSampler(self.diffusion, self.codec, num_samples=10, steps=4)

    def condition(self, clips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Clips ``[B, T, 3, H, W]`` (T = 1 here) → the pyramid of the key frame's features,
        then each block's feature term (𝔽ʲ's share of its fusion): all step-invariant."""
        key = clips[:, clips.shape[1] // 2]
        pyramid = self.pyramid(self.backbone(key))
        terms = [block.feature_term(f) for block, f in zip(self.blocks, pyramid, strict=True)]
        return (*pyramid, *terms)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The denoiser: noisy heatmaps ``[B, K, 24, 32]`` (signal units), steps ``[B]`` → x̂₀."""
        xbar = self.rescale(x_t, t)
        n = len(self.blocks)  # cond = (𝔽¹, 𝔽², T¹, T²)
        outs = [
            block(embed(xbar), feat, term)  # ℱʲ = Up(Fuse([Aʲ ⊙ 𝔽ʲ, 𝔽ʲ])), Aʲ = sigmoid(max_c x̄ʲ)
            for embed, block, feat, term in zip(
                self.embeds, self.blocks, cond[:n], cond[n:], strict=True
            )
        ]
        return self.head(self.fusion(outs))

    def loss(
        self, clips: torch.Tensor, heatmaps: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return self.diffusion.loss(self, heatmaps, self.condition(clips), weights)

    @torch.no_grad()
    def predict(
        self,
        clips: torch.Tensor | None = None,
        *,
        cond: tuple[torch.Tensor, ...] | None = None,
        num_samples: int | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> EnsembleResult:
        cond = self.condition(clips) if cond is None else cond
        shape = (cond[0].shape[0], self.num_keypoints, *self.codec.heatmap_size)
        return self.sampler(
            self, cond, shape, num_samples=num_samples, steps=steps, generator=generator
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/custom_denoiser", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    # 1. Data: synthetic videos of the QUADRUPED schema, single-frame crops (δ = 0).
    videos, frames, train_steps, eval_clips = (2, 6, 6, 8) if args.quick else (48, 8, 400, 300)
    train_steps = args.steps or train_steps
    root = build_synthetic_dataset(
        out / "data",
        SyntheticConfig(num_videos=videos, frames_per_video=frames, schema=QUADRUPED),
    )
    clip_cfg = ClipConfig(delta=0, input_size=INPUT_SIZE)
    codec = GaussianHeatmapCodec((INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4), sigma=1.5)
    augment = AugmentConfig(rotation=30, scale_range=(0.8, 1.2), half_body_prob=0.0)
    kw = {"schema": QUADRUPED, "config": clip_cfg, "codec": codec}
    train_set = TopDownClipDataset.from_videos(
        read_posetrack(root, split="train", schema=QUADRUPED), root, augment=augment, **kw
    )
    val_videos = read_posetrack(root, split="val", schema=QUADRUPED)
    val_set = TopDownClipDataset.from_videos(val_videos, root, **kw)  # ground-truth boxes
    print(f"{len(train_set)} training crops, {len(val_set)} validation crops of {QUADRUPED.name}")

    # 2. Train: the x₀-prediction loss of HeatmapDiffusion, AdamW with a one-cycle lr.
    model = QuadrupedPose(QUADRUPED.num_keypoints)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=train_steps)
    batch_size = min(32, len(train_set))
    loader = DataLoader(  # one worker prepares crops while the main process trains
        train_set,
        batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0 if args.quick else 1,
        persistent_workers=not args.quick,
    )
    step = 0
    while step < train_steps:
        for batch in loader:
            loss = model.loss(batch["clip"], batch["heatmaps"], batch["weights"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 100 == 0 or step == train_steps:
                print(f"step {step:4d}/{train_steps}  loss {loss.item():.5f}", flush=True)
            if step == train_steps:
                break
    train_seconds = time.perf_counter() - start

    # 3. Evaluate: AP with the schema's eval groups, keypoint error in image pixels.
    sweep = evaluate_model(
        model,
        val_set,
        val_videos,
        sweep=[(1, 1), (10, 4)],
        batch_size=32,
        max_clips=eval_clips,
        schema=QUADRUPED,
    )
    assert sweep is not None
    results = {"train_steps": train_steps, "clips": sweep.clips}
    for (n, s), ap in sweep.ap.items():
        spread, error = sweep.spread_error[(n, s)]
        row = {
            "mean_ap": ap.columns["Mean"],
            "columns": ap.columns,
            "error_px_mean": float(error.mean()),
            "error_px_median": float(np.median(error)),
            "mean_spread_px": float(spread.mean()),
        }
        results[f"N{n}_steps{s}"] = row
        print(
            f"\nN = {n}, steps = {s}: keypoint error mean {row['error_px_mean']:.2f} px, "
            f"median {row['error_px_median']:.2f} px (image pixels); spread "
            f"{row['mean_spread_px']:.2f} px"
        )
        print(ap.table())
    seconds = time.perf_counter() - start
    results.update(train_seconds=round(train_seconds, 1), seconds=round(seconds, 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    torch.save(model.state_dict(), out / "model.pt")
    print(
        f"\n{sweep.clips} validation crops; done in {seconds:.0f} s "
        f"(training {train_seconds:.0f} s) -> {out / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
