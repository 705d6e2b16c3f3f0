"""The paper's ablations on the built-in synthetic video benchmark, over several seeds.

Trains and evaluates, each from scratch with the demo's recipe and data (``demo_config``) and
only the model switches changed:

- Direct-single (no lookup, δ = 0)        — the paper's Table 4 first row
- + lookup (LMSFI), δ = 0                  — Table 4 second row / Table 8 δ = 0
- full model, δ = 1 (the demo's) and δ = 2 — Table 8 (δ = 2 is also Table 4's last row)
- low-resolution-only lookup, δ = 2        — Table 5
- concat fusion of scales, δ = 2           — Table 5 variant
- the single-pass heatmap regressor, δ = 1 — no diffusion: the control (``HeatmapRegressor``)
- and, on the demo's full model (δ = 1), N ∈ {1, 5, 10} × steps ∈ {1, 2, 4} — Tables 6 and 7.

Every variant runs once per seed (``--seeds``; the seed sets the weights, the data order, the
augmentation and the noise, not the data); the report gives mean ± standard deviation over the
seeds, validation and training AP side by side. It writes ``results.json``, ``ablations.md``
and two plots into ``--out``. Run (two runs at a time on 2 CPU cores)::

    python benchmarks/ablations/run.py --out outputs/ablations --jobs 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from kpdiff import DiffPose, HeatmapRegressor
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import prepare_datasets
from kpdiff.engine.demo import demo_config, plot_sweep
from kpdiff.engine.evaluate import evaluate_model
from kpdiff.engine.train import train
from kpdiff.io import atomic_path, write_text_atomic

CONTROL = "single-pass regressor, δ=1 (no diffusion)"
# name → (DiffPose overrides on top of the demo's, the paper's PoseTrack17 val mAP or None)
VARIANTS: dict[str, tuple[dict, float | None]] = {
    "Direct-single (no lookup, δ=0)": ({"lookup": "none", "delta": 0}, 52.5),
    "+ lookup (LMSFI), δ=0": ({"delta": 0}, 82.4),
    "full, δ=1": ({"delta": 1}, 84.5),
    "full, δ=2": ({"delta": 2}, 86.4),
    "low-resolution-only lookup, δ=2": ({"lookup": "low_res", "delta": 2}, 84.4),
    "concat fusion of scales, δ=2": ({"fusion": "concat", "delta": 2}, 86.2),
    CONTROL: ({"delta": 1}, None),
}
FULL = "full, δ=1"  # the demo's model: the N × steps grid is measured on it
PAPER_N = {1: 80.4, 5: 84.0, 10: 86.4}
PAPER_STEPS = {1: 85.9, 2: 86.3, 4: 86.4}
FULL_GRID = [(n, s) for n in (1, 5, 10) for s in (1, 2, 4)]
VARIANT_GRID = [(1, 1), (10, 1), (10, 4)]  # the paper's default last


def base_config(out: Path, steps: int | None, quick: bool) -> ExperimentConfig:
    """The demo's recipe and data, with this run's folders and (optionally) fewer steps."""
    cfg = demo_config(out, quick=quick)
    cfg.data.root = str(out / "data")
    cfg.data.workers = 0  # two runs share the two cores: one thread each, no loader process
    cfg.runtime.threads = 1
    if steps is not None and not quick:
        cfg.optim.max_steps = steps
    cfg.runtime.progress = False
    return cfg


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def run_variant(
    job: tuple[str, int], out: Path, steps: int | None, quick: bool, eval_only: bool = False
) -> dict:
    """Train one variant with one seed (unless ``eval_only`` and it is trained) and evaluate
    it on :data:`VARIANT_GRID` (:data:`FULL_GRID` for the demo's model), plus its training AP."""
    name, seed = job
    overrides, paper = VARIANTS[name]
    cfg = base_config(out, steps, quick)
    cfg.model.overrides = replace(cfg.model.overrides, **overrides)
    cfg.runtime.seed = seed
    cfg.runtime.output_dir = str(out / "runs" / f"{slug(name)}_seed{seed}")
    torch.set_num_threads(cfg.runtime.threads)
    t0 = time.perf_counter()
    datasets = prepare_datasets(cfg)
    kind = HeatmapRegressor if name == CONTROL else DiffPose
    best = Path(cfg.runtime.output_dir) / "best"
    if not (eval_only and (best / "model.safetensors").is_file()):
        torch.manual_seed(seed)
        model = kind(cfg.model.diffpose_config()) if kind is HeatmapRegressor else None
        train(cfg, datasets=datasets, model=model)
    model = kind.from_pretrained(best)
    grid = FULL_GRID if name == FULL else [(1, 1)] if name == CONTROL else VARIANT_GRID
    evaluate = functools.partial(evaluate_model, seed=seed, max_clips=cfg.eval.max_clips)
    sweep = evaluate(model, datasets.val, datasets.val_videos, sweep=grid)
    point = grid[-1]
    seen = evaluate(model, datasets.train_eval, datasets.train_videos, sweep=[point])
    assert sweep is not None and seen is not None
    result = {
        "variant": name,
        "seed": seed,
        "overrides": overrides,
        "paper": paper,
        "point": list(point),
        "columns": sweep.ap[point].columns,
        "train_mean": seen.ap[point].columns["Mean"],
        "mean": {f"N={n}, steps={k}": ap.columns["Mean"] for (n, k), ap in sweep.ap.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if name == FULL:
        result["grid_table"] = sweep.table()
        plot_sweep(sweep, out / f"full_ap_vs_n_steps_seed{seed}.png")
    print(
        f"{name}, seed {seed}: val Mean AP {result['columns']['Mean']:.1f}, train "
        f"{result['train_mean']:.1f} ({result['seconds']} s)",
        flush=True,
    )
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per variant: mean ± std over seeds of every column, the train AP and every grid point."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        first = mine[0]
        agg = {
            "paper": first["paper"],
            "overrides": first["overrides"],
            "point": first["point"],
            "seeds": [r["seed"] for r in mine],
            "columns": {c: mean_std([r["columns"][c] for r in mine]) for c in first["columns"]},
            "train_mean": mean_std([r["train_mean"] for r in mine]),
            "mean": {k: mean_std([r["mean"][k] for r in mine]) for k in first["mean"]},
        }
        agg["gap"] = mean_std([r["train_mean"] - r["columns"]["Mean"] for r in mine])
        out[name] = agg
    return out


def pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.1f} ± {value[1]:.1f}"


def markdown(summary: dict[str, dict], meta: dict) -> str:
    """The variants table (ours vs the paper) and the N × steps grid of the demo's model."""
    lines = [
        f"Mean ± standard deviation over seeds {meta['seeds']}; validation at N = 10, 4 steps "
        "(the paper's setting; the regressor has one pass), then Mean AP at N = 1 and 10 with "
        "one step, the training AP at the same point (training clips without augmentation) "
        "and the train − val gap:",
        "",
        "| variant | Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | **Mean** "
        "| N=1, 1 step | N=10, 1 step | train | gap | paper (PT17) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for name, r in summary.items():
        cols = r["columns"]
        vals = " | ".join(pm(cols[c]) if c != "Mean" else f"**{pm(cols[c])}**" for c in cols)
        one = pm(r["mean"]["N=1, steps=1"])
        ten = pm(r["mean"]["N=10, steps=1"]) if "N=10, steps=1" in r["mean"] else "–"
        paper = "–" if r["paper"] is None else f"{r['paper']}"
        lines.append(
            f"| {name} | {vals} | {one} | {ten} | {pm(r['train_mean'])} | {pm(r['gap'])} "
            f"| {paper} |"
        )
    full = summary.get(FULL)
    if full:
        lines += ["", f"The demo's model ({FULL}), Mean AP over N × steps:", ""]
        lines += ["| N | 1 step | 2 steps | 4 steps |", "| ---: | ---: | ---: | ---: |"]
        for n in (1, 5, 10):
            cells = " | ".join(pm(full["mean"][f"N={n}, steps={s}"]) for s in (1, 2, 4))
            lines.append(f"| {n} | {cells} |")
    lines += [
        "",
        f"Command: `{meta['command']}`; machine: {meta['machine']}; "
        f"wall time {meta['wall_seconds'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def plot_variants(summary: dict[str, dict], path: Path) -> None:
    """Bar chart of Mean AP per variant (mean ± std over seeds), next to the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    ours = [summary[n]["columns"]["Mean"] for n in names]
    paper = [summary[n]["paper"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    x = range(len(names))
    ax.barh([i + 0.2 for i in x], [m for m, _ in ours], xerr=[s for _, s in ours], height=0.4,
            label="kpdiff, synthetic benchmark (mean ± std over seeds)")  # fmt: skip
    ax.barh([i - 0.2 for i in x], paper, height=0.4, label="paper, PoseTrack17 val", alpha=0.6)
    ax.set_yticks(list(x), names, fontsize=7)
    ax.set_xlabel("Mean AP (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/ablations", help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per row")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default: the demo's)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument(
        "--eval-only", action="store_true", help="re-evaluate variants already trained in --out"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    names = [n for n in VARIANTS if not args.only or n in args.only]
    jobs = [(name, seed) for seed in args.seeds for name in names]  # every seed of a row early
    prepare_datasets(base_config(out, args.steps, args.quick))  # build the data once
    job = functools.partial(
        run_variant, out=out, steps=args.steps, quick=args.quick, eval_only=args.eval_only
    )
    if args.jobs > 1:  # one thread per process (runtime.threads = 1), one process per core
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            runs = list(pool.map(job, jobs))
    else:
        runs = [job(j) for j in jobs]
    for r in runs:
        r.pop("grid_table", None)
    summary = summarise(runs)
    seconds = time.perf_counter() - start
    meta = {
        "command": "python benchmarks/ablations/run.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} process(es) "
        f"of 1 thread, torch {torch.__version__}",
        "wall_seconds": round(seconds, 1),
        "seeds": args.seeds,
        "steps": args.steps,
    }
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "summary": summary, "runs": runs}
    write_text_atomic(out / "results.json", json.dumps(report, indent=2))
    write_text_atomic(out / "ablations.md", markdown(summary, meta))
    plot_variants(summary, out / "variants.png")
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
