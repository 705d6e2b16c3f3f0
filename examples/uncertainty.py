"""Uncertainty: the ensemble spread flags unreliable joints.

DiffPose denoises N hypotheses from N different noises and averages them. Where the image is
clear they agree; where a joint is occluded, blurred or ambiguous they scatter. The per-joint
``spread`` (RMS distance of the N decoded hypotheses to their mean, in pixels) therefore comes
for free with every prediction. This script measures how well it predicts the actual error:

1. trains a tiny DiffPose on the synthetic benchmark (or loads ``--checkpoint``);
2. evaluates it with N = 10 hypotheses and 4 steps; ``evaluate_model`` returns, per visible
   ground-truth joint, the spread and the keypoint error (image pixels);
3. prints Spearman's rank correlation between them, the AUROC of the spread for "this joint is
   wrong at PCKh@0.5" (error above half the person's head size, the metric's own test; or
   above ``--threshold`` pixels), the mean error and the failure share per spread decile (the
   reliability table), and plots both to ``error_vs_spread.png``.

    python examples/uncertainty.py            # about 2 minutes on 2 CPU cores
    python examples/uncertainty.py --quick    # a seconds-long smoke run
    python examples/uncertainty.py --checkpoint outputs/demo/run/best --data outputs/demo/data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu, spearmanr

from kpdiff import DiffPose, DiffPoseOverrides
from kpdiff.data import AugmentConfig, SyntheticConfig
from kpdiff.engine import ExperimentConfig, evaluate_model, train
from kpdiff.engine.data import prepare_datasets


def experiment(out: Path, *, quick: bool, threads: int = 1) -> ExperimentConfig:
    """The tiny preset (δ = 1, 3-frame clips) on the synthetic set, sized for a CPU."""
    cfg = ExperimentConfig()
    cfg.model.preset = "diffpose-tiny"
    cfg.data.root = str(out / "data")
    videos, frames = (2, 6) if quick else (36, 8)
    cfg.data.synthetic = SyntheticConfig(num_videos=videos, frames_per_video=frames)
    cfg.data.augment = AugmentConfig(rotation=30, scale_range=(0.75, 1.25))  # milder: short run
    cfg.optim.lr, cfg.optim.batch_size = 1e-3, (8 if quick else 16)
    cfg.optim.epochs, cfg.optim.milestones = (1, ()) if quick else (14, (11,))
    cfg.eval.max_clips = 16 if quick else 600
    cfg.runtime.output_dir = str(out / "run")
    cfg.runtime.progress, cfg.runtime.log_every = False, 100
    cfg.runtime.threads = threads  # one thread: on a shared 2-core machine far faster than two
    return cfg


def spread_statistics(
    spread: np.ndarray,
    error: np.ndarray,
    *,
    threshold: float | np.ndarray,
    bins: int = 10,
    failure: str = "",
) -> dict:
    """Spearman's ρ, the AUROC of the spread for failures (``error > threshold``, a number of
    pixels or one radius per joint), the mean error per spread bin (equal counts) and the
    failure shares."""
    order = np.argsort(spread, kind="stable")
    groups = np.array_split(order, bins)  # bin i: the i-th tenth of the joints by spread
    top = groups[-1]
    rest = np.concatenate(groups[:-1])
    failed = error > threshold
    rho, p_value = spearmanr(spread, error)
    # AUROC = P(spread of a failed joint > spread of a correct one), ties counting one half:
    # the Mann–Whitney U statistic over the product of the two counts.
    n_bad, n_good = int(failed.sum()), int((~failed).sum())
    auroc = (
        float(mannwhitneyu(spread[failed], spread[~failed]).statistic / (n_bad * n_good))
        if n_bad and n_good
        else float("nan")
    )
    return {
        "joints": len(error),
        "spearman_rho": float(rho),
        "spearman_p": float(p_value),
        "auroc": auroc,
        "failure": failure or f"error > {float(np.mean(threshold)):g} px",
        "failure_rate": float(failed.mean()),
        "threshold_px": float(np.mean(threshold)),
        "bin_mean_spread": [float(spread[g].mean()) for g in groups],
        "bin_mean_error": [float(error[g].mean()) for g in groups],
        "bin_failure_share": [float(failed[g].mean()) for g in groups],
        "failure_share_top_bin": float(failed[top].mean()),
        "failure_share_rest": float(failed[rest].mean()),
        "failures_caught_by_top_bin": float(failed[top].sum() / max(failed.sum(), 1)),
        "mean_error_px": float(error.mean()),
        "mean_spread_px": float(spread.mean()),
    }


def plot(spread: np.ndarray, error: np.ndarray, stats: dict, path: Path) -> None:
    """Error against spread (joints and bin means), and the failure share per spread bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.scatter(spread, np.maximum(error, 0.1), s=4, alpha=0.2, color="tab:gray", label="joints")
    left.plot(stats["bin_mean_spread"], stats["bin_mean_error"], "o-", color="tab:red", zorder=3,
              label="mean per spread decile")  # fmt: skip
    left.axhline(stats["threshold_px"], ls="--", color="k", lw=1,
                 label="failure threshold (mean)")  # fmt: skip
    left.set(xlabel="ensemble spread (px)", ylabel="keypoint error (px)", yscale="log",
             xlim=(0, np.quantile(spread, 0.995) * 1.05),
             title=f"ρ = {stats['spearman_rho']:.2f}, AUROC {stats['auroc']:.2f}")  # fmt: skip
    left.legend(loc="lower right", framealpha=0.9)
    shares = 100 * np.asarray(stats["bin_failure_share"])
    right.bar(np.arange(1, len(shares) + 1), shares, color="tab:blue")
    right.set(
        xlabel="spread decile (1 = most confident)",
        xticks=range(1, len(shares) + 1),
        ylabel="failed joints (%)",
        title=f"failures ({stats['failure']}) by spread decile",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/uncertainty", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--checkpoint", help="a save_pretrained folder: skip the training")
    parser.add_argument(
        "--data",
        help="with --checkpoint: evaluate on this dataset root's validation split as it is "
        "(e.g. outputs/demo/data, the demo's), instead of the script's own synthetic set",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--num-samples", "-n", type=int, default=10, help="N (default 10)")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps (default 4)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM's η (default: the model's)")
    parser.add_argument(
        "--threshold",
        type=float,
        help="an error above this many image pixels is a failure (default: wrong at PCKh@0.5, "
        "half the person's head size)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)  # also for the evaluation, outside the engine

    cfg = experiment(out, quick=args.quick, threads=args.threads)
    if args.checkpoint:
        model = DiffPose.from_pretrained(args.checkpoint)
        cfg.model.overrides = DiffPoseOverrides(
            delta=model.config.delta, input_size=model.config.input_size
        )
        if args.data:
            cfg.data.root, cfg.data.synthetic = args.data, None  # read, never rebuild
        datasets = prepare_datasets(cfg, train=False)
    else:
        datasets = prepare_datasets(cfg)
        # no validation inside training (evaluated below): the final weights go to run/best
        result = train(cfg, datasets=dataclasses.replace(datasets, val=None))
        print(f"trained {result.steps} steps in {result.seconds:.0f} s")
        model = DiffPose.from_pretrained(out / "run" / "best")

    if args.eta is not None:
        model.sampler.eta = args.eta  # η > 0 adds fresh noise at every step
    key = (args.num_samples, args.steps)
    sweep = evaluate_model(
        model,
        datasets.val,
        datasets.val_videos,
        sweep=[key],
        max_clips=cfg.eval.max_clips,
        batch_size=32,
    )
    assert sweep is not None
    spread, error = sweep.spread_error[key]
    if args.threshold is None:
        radius, failure = sweep.pckh_threshold[key], "wrong at PCKh@0.5"
        keep = np.isfinite(radius)  # persons without a head box cannot be judged
        spread, error, radius = spread[keep], error[keep], radius[keep]
    else:
        radius, failure = np.full_like(error, args.threshold), f"error > {args.threshold:g} px"
    stats = spread_statistics(spread, error, threshold=radius, failure=failure)
    stats["mean_ap"] = sweep.ap[key].columns["Mean"]
    print(
        f"N = {key[0]}, steps = {key[1]}: {stats['joints']} visible joints on {sweep.clips} "
        f"clips, Mean AP {stats['mean_ap']:.1f}, mean error {stats['mean_error_px']:.1f} px, "
        f"mean spread {stats['mean_spread_px']:.2f} px"
    )
    print(
        f"Spearman ρ(spread, error) = {stats['spearman_rho']:.3f} (p = {stats['spearman_p']:.1e})"
    )
    print(
        f"AUROC of the spread for '{failure}' ({100 * stats['failure_rate']:.1f} % of the "
        f"joints): {stats['auroc']:.3f}"
    )
    print(f"spread decile   mean spread   mean error   {failure}")
    bins = ("bin_mean_spread", "bin_mean_error", "bin_failure_share")
    for i, (s, e, f) in enumerate(zip(*(stats[k] for k in bins), strict=True), start=1):
        print(f"{i:>13}   {s:>8.2f} px  {e:>8.1f} px   {100 * f:>11.1f} %")
    print(
        f"{failure}: {100 * stats['failure_share_top_bin']:.1f} % of the "
        f"highest-spread decile vs {100 * stats['failure_share_rest']:.1f} % of the rest; "
        f"that decile holds {100 * stats['failures_caught_by_top_bin']:.1f} % of all failures"
    )
    plot(spread, error, stats, out / "error_vs_spread.png")
    (out / "uncertainty.json").write_text(json.dumps(stats, indent=2))
    np.savez(out / "spread_error.npz", spread=spread, error=error, radius=radius)  # per joint
    print(f"wrote {out / 'error_vs_spread.png'}, {out / 'uncertainty.json'} and the raw pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
