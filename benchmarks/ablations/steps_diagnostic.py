"""Why can more sampling steps lower the AP? x̂₀ quality per timestep, two ways.

For each timestep of a 4-step DDIM chain (999, 749, 499, 249) it measures the keypoint error of
the model's x̂₀ when the model is fed

- the TRUE noisy heatmap x_t = √ᾱ_t x₀ + √(1-ᾱ_t) ε (the forward process of the ground truth,
  what the model saw in training), and
- the x_t the sampler actually builds from the model's own previous x̂₀.

If the first column improves as t falls while the second does not, the model reads x_t well but
its own earlier estimates mislead it (exposure bias): more steps then cannot help.

    python benchmarks/ablations/steps_diagnostic.py --checkpoint outputs/demo/run/best \\
        --data outputs/demo/data
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.data import DataLoader, Subset

from kpdiff import DiffPose
from kpdiff.data import TopDownClipDataset, read_posetrack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder")
    parser.add_argument("--data", required=True, help="dataset root (synthetic or PoseTrack)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--clips", type=int, default=300, help="clips to measure")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = DiffPose.from_pretrained(args.checkpoint).eval()
    clip_cfg = model.data_config()
    videos = read_posetrack(args.data, split=args.split)
    dataset = TopDownClipDataset.from_videos(videos, args.data, config=clip_cfg)
    subset = Subset(dataset, range(min(args.clips, len(dataset))))
    g = torch.Generator().manual_seed(args.seed)
    signal, codec, diffusion = model.diffusion.signal, model.codec, model.diffusion
    true_err: dict[int, list[torch.Tensor]] = {}
    chain_err: dict[int, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in DataLoader(subset, batch_size=50):
            visible = batch["weights"] > 0
            gt = batch["keypoints"][..., :2]
            cond = model.condition(batch["clip"])
            x0 = signal.to_signal(batch["heatmaps"])
            _, chain = diffusion.sample(
                model.denoise, cond, x0.shape, steps=args.steps, generator=g,
                return_intermediates=True,
            )  # fmt: skip
            scheduler = diffusion.new_scheduler()
            scheduler.set_timesteps(args.steps)
            for t, x0_chain in zip(scheduler.timesteps.tolist(), chain, strict=True):
                tt = torch.full((len(x0),), t)
                x_t = diffusion.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
                x0_true = signal.from_signal(model.denoise(x_t, tt, cond).clamp(-2, 2))
                for store, heatmaps in ((true_err, x0_true), (chain_err, x0_chain)):
                    kp, _ = codec.decode(heatmaps)
                    store.setdefault(t, []).append((kp - gt).norm(dim=-1)[visible])
    print(f"{len(subset)} clips, keypoint error of x̂₀ (crop pixels) per timestep")
    header = ("t", "true x_t: median", "< 4 px", "sampled x_t: median", "< 4 px")
    print("{:>5}  {:>17} {:>7}   {:>20} {:>7}".format(*header))
    for t in true_err:
        a, b = torch.cat(true_err[t]), torch.cat(chain_err[t])
        print(
            f"{t:>5}  {a.median():>17.2f} {(a < 4).float().mean():>7.2f}   "
            f"{b.median():>20.2f} {(b < 4).float().mean():>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
