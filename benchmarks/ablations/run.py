"""The paper's ablations on the built-in synthetic video benchmark, with a fixed seed.

Trains and evaluates, each from scratch with the same data, seed and schedule:

- Direct-single (no lookup, δ = 0)        — the paper's Table 4 first row
- + lookup (LMSFI), δ = 0                  — Table 4 second row / Table 8 δ = 0
- full model, δ = 1 and δ = 2              — Table 8 (δ = 2 is also Table 4's last row)
- low-resolution-only lookup, δ = 2        — Table 5
- concat fusion of scales, δ = 2           — Table 5 variant
- and, on the full δ = 2 model, N ∈ {1, 5, 10} × steps ∈ {1, 2, 4} — Tables 6 and 7.

It writes ``results.json``, ``ablations.md`` (Markdown tables) and two plots into ``--out``.
Run (two variants at a time on 2 CPU cores)::

    python benchmarks/ablations/run.py --out outputs/ablations --jobs 2
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import build_model, prepare_datasets
from kpdiff.engine.demo import demo_config, plot_sweep
from kpdiff.engine.evaluate import evaluate_model
from kpdiff.engine.train import train
from kpdiff.io import atomic_path, write_text_atomic

# name → (DiffPose overrides, the paper's PoseTrack17 val mAP for that row)
VARIANTS: dict[str, tuple[dict, float]] = {
    "Direct-single (no lookup, δ=0)": ({"lookup": "none", "delta": 0}, 52.5),
    "+ lookup (LMSFI), δ=0": ({"delta": 0}, 82.4),
    "full, δ=1": ({"delta": 1}, 84.5),
    "full, δ=2": ({"delta": 2}, 86.4),
    "low-resolution-only lookup, δ=2": ({"lookup": "low_res", "delta": 2}, 84.4),
    "concat fusion of scales, δ=2": ({"fusion": "concat", "delta": 2}, 86.2),
}
FULL = "full, δ=2"
PAPER_N = {1: 80.4, 5: 84.0, 10: 86.4}
PAPER_STEPS = {1: 85.9, 2: 86.3, 4: 86.4}


def base_config(out: Path, epochs: int, videos: int, quick: bool) -> ExperimentConfig:
    """The demo's recipe (tiny preset, synthetic data), with this run's folders and length."""
    cfg = demo_config(out, quick=quick)
    cfg.data.root = str(out / "data")
    if not quick:
        cfg.data.synthetic_videos = videos
        cfg.optim.epochs = epochs
        cfg.optim.milestones = (int(epochs * 0.75),)
    cfg.runtime.progress = False
    return cfg


FULL_GRID = [(n, s) for n in (1, 5, 10) for s in (1, 2, 4)]
VARIANT_GRID = [(1, 1), (10, 1), (10, 4)]  # the paper's default last


def run_variant(
    name: str, out: Path, epochs: int, videos: int, quick: bool, eval_only: bool = False
) -> dict:
    """Train one variant from scratch (unless ``eval_only`` and it is trained) and evaluate it
    on :data:`VARIANT_GRID` (the full N × steps grid for the full model)."""
    overrides, paper = VARIANTS[name]
    cfg = base_config(out, epochs, videos, quick)
    cfg.model.overrides = dict(overrides)
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    cfg.runtime.output_dir = str(out / "runs" / slug)
    torch.set_num_threads(cfg.runtime.threads)
    t0 = time.perf_counter()
    datasets = prepare_datasets(cfg)
    best = Path(cfg.runtime.output_dir) / "best"
    if not (eval_only and (best / "model.safetensors").is_file()):
        torch.manual_seed(cfg.runtime.seed)
        train(cfg, datasets=datasets)
    model = type(build_model(cfg)).from_pretrained(best)
    grid = FULL_GRID if name == FULL else VARIANT_GRID
    sweep = evaluate_model(
        model, datasets.val, datasets.val_videos, sweep=grid, seed=cfg.runtime.seed,
        max_clips=cfg.eval.max_clips,
    )  # fmt: skip
    assert sweep is not None
    result = {
        "overrides": overrides,
        "paper": paper,
        "columns": sweep.ap[(10, 4)].columns,
        "mean": {f"N={n}, steps={k}": sweep.ap[(n, k)].columns["Mean"] for n, k in VARIANT_GRID},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if name == FULL:
        result["grid"] = {f"{n},{s}": ap.columns for (n, s), ap in sweep.ap.items()}
        result["grid_table"] = sweep.table()
        plot_sweep(sweep, out / "full_ap_vs_n_steps.png")
    print(f"{name}: Mean AP {result['columns']['Mean']:.1f} ({result['seconds']} s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/ablations", help="output folder")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per variant")
    parser.add_argument("--videos", type=int, default=20, help="synthetic videos per split")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained in parallel")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument(
        "--eval-only", action="store_true", help="re-evaluate variants already trained in --out"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    names = [n for n in VARIANTS if not args.only or n in args.only]
    prepare_datasets(base_config(out, args.epochs, args.videos, args.quick))  # build data once
    job = functools.partial(
        run_variant,
        out=out,
        epochs=args.epochs,
        videos=args.videos,
        quick=args.quick,
        eval_only=args.eval_only,
    )
    if args.jobs > 1:  # one thread per process (runtime.threads = 1), one process per core
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            results = dict(zip(names, pool.map(job, names), strict=True))
    else:
        results = {name: job(name) for name in names}
    sweep_table = results.get(FULL, {}).pop("grid_table", "")
    seconds = time.perf_counter() - start
    meta = {
        "command": "python benchmarks/ablations/run.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} process(es) "
        f"of 1 thread, torch {torch.__version__}",
        "wall_seconds": round(seconds, 1),
    }
    (out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "results.json", json.dumps({"meta": meta, "results": results}, indent=2)
    )
    write_text_atomic(out / "ablations.md", markdown(results, sweep_table, meta))
    plot_variants(results, out / "variants.png")
    print(markdown(results, sweep_table, meta))
    return 0


def markdown(results: dict[str, dict], sweep_table: str, meta: dict) -> str:
    """The variants table (ours vs the paper) and the N × steps grid of the full model."""
    lines = [
        "N = 10, 4 steps (the paper's setting), per joint; then Mean AP at N = 1 and 10 with one "
        "step:",
        "",
        "| variant | Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean "
        "| Mean, N=1 1 step | Mean, N=10 1 step | paper (PT17) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        cols = r["columns"]
        vals = " | ".join(f"{cols[c]:.1f}" for c in cols)
        one = r["mean"]["N=1, steps=1"]
        ten = r["mean"]["N=10, steps=1"]
        lines.append(f"| {name} | {vals} | {one:.1f} | {ten:.1f} | {r['paper']} |")
    if sweep_table:
        lines += [
            "",
            "Full model (δ = 2), Mean AP over N × steps:",
            "",
            "```text",
            sweep_table,
            "```",
        ]
    lines += [
        "",
        f"Command: `{meta['command']}`; machine: {meta['machine']}; "
        f"wall time {meta['wall_seconds'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def plot_variants(results: dict[str, dict], path: Path) -> None:
    """Bar chart of Mean AP per variant, ours next to the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    ours = [results[n]["columns"]["Mean"] for n in names]
    paper = [results[n]["paper"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    x = range(len(names))
    ax.barh([i + 0.2 for i in x], ours, height=0.4, label="kpdiff, synthetic benchmark")
    ax.barh([i - 0.2 for i in x], paper, height=0.4, label="paper, PoseTrack17 val", alpha=0.6)
    ax.set_yticks(list(x), names, fontsize=7)
    ax.set_xlabel("Mean AP (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
