"""``kpdiff demo``: the whole job on a fresh machine, on the CPU, in a few minutes.

It builds the synthetic video dataset, trains the small preset, evaluates it over
N ∈ {1, 5, 10} × steps ∈ {1, 2, 4} (the encoder runs once per clip for the whole grid), prints
the per-joint table, and writes a skeleton overlay GIF and a plot of AP against N and steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kpdiff.diffpose import DiffPose
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import build_model, prepare_datasets
from kpdiff.engine.evaluate import SweepResult, evaluate_model
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
    cfg.data.synthetic_videos = 20
    cfg.data.synthetic_frames = 30
    cfg.model.preset = "diffpose-tiny"
    cfg.optim.lr = 1e-3
    cfg.optim.batch_size = 16
    cfg.optim.epochs = 30
    cfg.optim.milestones = (22,)
    cfg.eval.every = 0  # validate once, at the end
    cfg.eval.num_samples = 10
    cfg.eval.steps = 4
    cfg.eval.max_clips = 600
    cfg.runtime.output_dir = str(out / "run")
    cfg.runtime.log_every = 20
    # One thread: the tiny model's ops are too small to gain from two, and when anything else
    # runs on the machine two spinning OpenMP threads per process slow training ~20x (measured:
    # 127 vs 5 samples/s beside one other busy process on 2 cores).
    cfg.runtime.threads = 1
    if quick:
        cfg.data.synthetic_videos = 3
        cfg.data.synthetic_frames = 8
        cfg.optim.epochs = 2
        cfg.optim.milestones = (1,)
        cfg.eval.max_clips = 24
    return cfg


@dataclass
class DemoResult:
    """What the demo measured and where it wrote it."""

    output_dir: Path
    sweep: SweepResult
    untrained_mean_ap: float
    seconds: float


def run_demo(
    output_dir: str | Path = "outputs/demo",
    *,
    quick: bool = False,
    config: ExperimentConfig | None = None,
) -> DemoResult:
    """Build data, train, evaluate the N × steps grid, write table, plot and overlay.

    Args:
        output_dir: where the data, the run, the table, the plot and the GIF go.
            Default ``"outputs/demo"``.
        quick: a seconds-long smoke run (tiny data, two short epochs). Default ``False``.
        config: use this experiment instead of :func:`demo_config`.

    Returns:
        A :class:`DemoResult`; the same figures are in ``output_dir/summary.json``.
    """
    start = time.perf_counter()
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

    seconds = time.perf_counter() - start
    summary = {
        "seconds": round(seconds, 1),
        "untrained_mean_ap": untrained_ap,
        "clips_evaluated": sweep.clips,
        "grid": [
            {"num_samples": n, "steps": s, "columns": ap.columns} for (n, s), ap in sweep.ap.items()
        ],
    }
    write_json_atomic(summary, out / "summary.json")
    print(
        f"done in {seconds:.0f} s: {out / 'ap_table.txt'}, {out / 'ap_vs_n_steps.png'}, "
        f"{out / 'overlay.gif'}, {out / 'summary.json'}",
        flush=True,
    )
    return DemoResult(out, sweep, untrained_ap, seconds)


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
