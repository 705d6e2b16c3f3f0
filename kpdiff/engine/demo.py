"""``kpdiff demo``: the whole job on a fresh machine, on the CPU, in a few minutes.

It builds the synthetic video dataset, trains the small preset, evaluates it over
N ∈ {1, 5, 10} × steps ∈ {1, 2, 4} (the encoder runs once per clip for the whole grid), prints
the per-joint table and the train−val gap, and writes a skeleton overlay GIF, a plot of AP
against N and steps, and pictures of the lookup masks, the steps and the hypotheses of one
clip (:mod:`kpdiff.engine.figures`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.diffpose import DiffPose
from kpdiff.diffpose_config import DiffPoseOverrides
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import build_model, prepare_datasets
from kpdiff.engine.evaluate import SweepResult, evaluate_model
from kpdiff.engine.figures import inside_pictures
from kpdiff.engine.predict import VideoPredictor, render_video
from kpdiff.engine.train import train
from kpdiff.io import atomic_path, write_json_atomic, write_text_atomic

__all__ = ["DemoResult", "demo_config", "run_demo"]


def demo_config(
    output_dir: str | Path = "outputs/demo", *, quick: bool = False
) -> ExperimentConfig:
    """The demo's experiment: the tiny preset on the synthetic set, sized for 2 CPU cores.

    ``examples/diffpose/configs/synthetic_cpu.yaml`` holds the same settings as a file.

    Args:
        output_dir: where everything is written. Default ``"outputs/demo"``.
        quick: a much shorter run (a few seconds of training) for smoke tests. Default ``False``.
    """
    cfg = ExperimentConfig()
    out = Path(output_dir)
    cfg.data.root = str(out / "data")
    # Training data that cannot be memorised: 1,000 short videos (about 19,000 clips, each seen
    # about 1.7 times); validation keeps the fixed 20 × 30-frame set of generator version 1.
    cfg.data.synthetic = SyntheticConfig(
        num_videos=1000, frames_per_video=10, split_sizes={"val": (20, 30)}
    )
    cfg.model.preset = "diffpose-tiny"
    # Train more often at high noise and on x_t built from the model's own first guess (the
    # measured effect of each is in docs/ablations.md).
    cfg.model.overrides = DiffPoseOverrides(t_power=3.0, self_align=0.7)
    cfg.optim.lr = 1e-3
    cfg.optim.batch_size = 16
    cfg.optim.epochs = 2
    cfg.optim.max_steps = 2000
    cfg.optim.schedule, cfg.optim.warmup_steps = "cosine", 100
    cfg.optim.ema_decay = 0.998
    cfg.eval.every = 0  # validate once, at the end
    cfg.eval.num_samples = 10
    cfg.eval.steps = 4
    cfg.eval.max_clips = 600
    cfg.runtime.output_dir = str(out / "run")
    cfg.runtime.log_every = 20
    # Both cores for torch, clips loaded in the training process: measured fastest on the
    # 2-core machine (benchmarks/demo_speed.py, samples/s: 84.9 for 2 threads and no loader
    # worker, 80.1 with one worker, 71.1 for 1 thread and one worker, 64.0 for 1 thread alone).
    # With other busy processes on the machine, one thread is safer (runtime.threads = 1).
    cfg.data.workers = 0
    cfg.runtime.threads = 2
    if quick:
        cfg.data.synthetic = SyntheticConfig(
            num_videos=3, frames_per_video=8, split_sizes={"val": (3, 8)}
        )
        cfg.optim.epochs = 2
        cfg.optim.max_steps = None
        cfg.optim.warmup_steps = 2
        cfg.eval.max_clips = 24
    return cfg


@dataclass
class DemoResult:
    """What the demo measured and where it wrote it."""

    output_dir: Path
    sweep: SweepResult
    untrained_mean_ap: float
    seconds: float
    train_mean_ap: float | None = None


def run_demo(
    output_dir: str | Path | None = None,
    *,
    quick: bool = False,
    config: ExperimentConfig | None = None,
) -> DemoResult:
    """Build data, train, evaluate the N × steps grid, write table, plot and overlay.

    Args:
        output_dir: where the table, the plot, the GIF and the pictures go (and, without
            ``config``, the data and the run). Default: ``"outputs/demo"``, or the parent of
            ``config.runtime.output_dir``.
        quick: a seconds-long smoke run (tiny data, two short epochs). Default ``False``.
        config: use this experiment instead of :func:`demo_config`.

    Returns:
        A :class:`DemoResult`; the same figures are in ``output_dir/summary.json``.
    """
    start = time.perf_counter()
    if output_dir is None:
        output_dir = Path(config.runtime.output_dir).parent if config else "outputs/demo"
    out = Path(output_dir)
    cfg = config or demo_config(out, quick=quick)
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    torch.manual_seed(cfg.runtime.seed)
    print(f"[1/5] synthetic dataset in {cfg.data.root}", flush=True)
    datasets = prepare_datasets(cfg)
    print(
        f"      {len(datasets.train)} training clips, {len(datasets.val)} validation clips",
        flush=True,
    )

    print("[2/5] untrained model, for reference (N = 1, 1 step)", flush=True)
    untrained = build_model(cfg, num_keypoints=datasets.schema.num_keypoints)
    base = evaluate_model(
        untrained, datasets.val, datasets.val_videos, sweep=[(1, 1)],
        batch_size=cfg.eval.batch_size, seed=cfg.runtime.seed, max_clips=cfg.eval.max_clips,
    )  # fmt: skip
    assert base is not None
    untrained_ap = base.ap[(1, 1)].columns["Mean"]
    print(f"      Mean AP {untrained_ap:.1f}", flush=True)

    print("[3/5] training", flush=True)
    train(cfg, datasets=datasets)
    model = DiffPose.from_pretrained(Path(cfg.runtime.output_dir) / "best")

    print("[4/5] evaluating N x steps (the encoder runs once per clip)", flush=True)
    point = (cfg.eval.num_samples, cfg.eval.steps)
    train_ap = None
    if datasets.train_eval is not None and len(datasets.train_eval):
        seen = evaluate_model(
            model, datasets.train_eval, datasets.train_videos, sweep=[point],
            batch_size=cfg.eval.batch_size, seed=cfg.runtime.seed, max_clips=cfg.eval.max_clips,
        )  # fmt: skip
        assert seen is not None
        train_ap = seen.ap[point].columns["Mean"]
    grid = [(n, s) for n in cfg.eval.sweep_num_samples for s in cfg.eval.sweep_steps]
    sweep = evaluate_model(
        model, datasets.val, datasets.val_videos, sweep=grid, batch_size=cfg.eval.batch_size,
        seed=cfg.runtime.seed, max_clips=cfg.eval.max_clips,
    )  # fmt: skip
    assert sweep is not None
    table = sweep.table()
    print(table, flush=True)
    print(
        f"      ({sweep.clips} clips, {sweep.seconds:.1f} s for the grid; "
        f"untrained model: Mean AP {untrained_ap:.1f})",
        flush=True,
    )
    val_ap = sweep.ap[point].columns["Mean"]
    if train_ap is not None:
        print(
            f"      N = {point[0]}, {point[1]} steps: train Mean AP {train_ap:.1f} "
            f"(training clips, no augmentation), val {val_ap:.1f}, gap {train_ap - val_ap:.1f}",
            flush=True,
        )
    write_text_atomic(out / "ap_table.txt", table + "\n")
    plot_sweep(sweep, out / "ap_vs_n_steps.png")

    print("[5/5] skeleton overlay of a validation video", flush=True)
    video = datasets.val_videos[0]
    root = Path(cfg.data.root)
    frames = [root / f.image_path for f in video.frames]
    boxes = root / "detections" / f"{cfg.data.val_split}_boxes.json"
    predictor = VideoPredictor(model, num_samples=cfg.eval.num_samples, steps=cfg.eval.steps)
    prediction = predictor(frames, boxes)
    render_video(prediction, out / "overlay.gif")
    gif_strip(out / "overlay.gif", out / "overlay_frames.png")
    pictures = inside_pictures(
        model, datasets.val[_clearest_clip(datasets.val)]["clip"], datasets.schema,
        out / "inside", num_samples=cfg.eval.num_samples, steps=cfg.eval.steps,
        seed=cfg.runtime.seed,
    )  # fmt: skip

    seconds = time.perf_counter() - start
    summary = {
        "seconds": round(seconds, 1),
        "untrained_mean_ap": untrained_ap,
        "train_mean_ap": train_ap,
        "val_mean_ap": val_ap,
        "point": list(point),
        "clips_evaluated": sweep.clips,
        "grid": [
            {"num_samples": n, "steps": s, "columns": ap.columns} for (n, s), ap in sweep.ap.items()
        ],
    }
    write_json_atomic(summary, out / "summary.json")
    print(
        f"done in {seconds:.0f} s: {out / 'ap_table.txt'}, {out / 'ap_vs_n_steps.png'}, "
        f"{out / 'overlay.gif'} (frames: overlay_frames.png), {out / 'summary.json'}, "
        f"{', '.join(str(p) for p in pictures)}",
        flush=True,
    )
    return DemoResult(out, sweep, untrained_ap, seconds, train_ap)


def gif_strip(gif: str | Path, png: str | Path, *, frames: int = 3) -> Path:
    """``frames`` evenly spaced frames of an animated GIF side by side, as one PNG (atomic)."""
    from PIL import Image

    with Image.open(gif) as im:
        count = getattr(im, "n_frames", 1)
        picks = np.linspace(0, count - 1, frames + 2)[1:-1].round().astype(int)
        tiles = []
        for i in picks:
            im.seek(int(i))
            tiles.append(im.convert("RGB"))
    w, h = tiles[0].size
    strip = Image.new("RGB", (w * len(tiles), h))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * w, 0))
    with atomic_path(png) as tmp:
        strip.save(tmp, format="PNG")
    return Path(png)


def _clearest_clip(dataset: Any, first: int = 120) -> int:
    """The clip among the first ones with the most labelled joints (ties: the earliest)."""
    samples = getattr(dataset, "samples", [])[:first]
    counts = [0 if s.keypoints is None else int((s.keypoints[:, 2] > 0).sum()) for s in samples]
    return int(np.argmax(counts)) if counts else 0


def plot_sweep(sweep: SweepResult, path: str | Path) -> Path:
    """Plot Mean AP against N, one line per number of steps; written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = sorted({s for _, s in sweep.ap})
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for s in steps:
        points = sorted((n, ap.columns["Mean"]) for (n, s2), ap in sweep.ap.items() if s2 == s)
        ax.plot(*zip(*points, strict=True), marker="o", label=f"{s} step{'s' if s > 1 else ''}")
    ax.set_xlabel("N (hypotheses averaged)")
    ax.set_ylabel("Mean AP (%)")
    ax.set_title("DiffPose on the synthetic benchmark")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
