"""Reproduce DiffPose's PoseTrack tables: train, evaluate a checkpoint, print Table 1.

    python benchmarks/posetrack/run.py train --dataset posetrack18 --data /data/posetrack18
    python benchmarks/posetrack/run.py evaluate runs/posetrack18/best \\
        --data /data/posetrack18 --boxes /data/posetrack18/detections/val_boxes.json --sweep

``train`` runs ``kpdiff.engine.train`` on ``examples/diffpose/configs/<dataset>.yaml`` (or
``--config``) with ``--set section.field=value`` overrides, after checking that every frame its
clip windows read exists and that the detector boxes find their frames. Launch it with
``torchrun --standalone --nproc_per_node=G`` for several GPUs.

``evaluate`` is ``kpdiff evaluate-model`` (same options, same job:
:func:`kpdiff.engine.evaluate_checkpoint.evaluate_checkpoint`, same ``results.json``) printed as
the per-joint table of the paper's Table 1, with the paper's numbers below for comparison. Data
settings default to the run's ``experiment.yaml``.

``smoke.py`` beside this file runs the whole pipeline on the real 3-frame PoseTrack18 sample.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "diffpose" / "configs"
DATASETS = ("posetrack17", "posetrack18", "posetrack21", "synthetic_cpu")
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")

# DiffPose (ICCV 2023), Table 1, validation sets (docs/reproduce.md). The paper's per-joint
# numbers are quoted here for PoseTrack17 only; PoseTrack18 and 21 by their Mean.
PAPER: dict[str, dict[str, float]] = {
    "posetrack17": {"Head": 89.0, "Shoulder": 91.2, "Elbow": 87.4, "Wrist": 83.5, "Hip": 85.5,
                    "Knee": 87.2, "Ankle": 80.2, "Mean": 86.4},
    "posetrack18": {"Mean": 83.0},
    "posetrack21": {"Mean": 82.9},
}  # fmt: skip
PAPER_NAMES = {"posetrack17": "PoseTrack17", "posetrack18": "PoseTrack18",
               "posetrack21": "PoseTrack21"}  # fmt: skip


# --------------------------------------------------------------------------- the table


def format_table(rows: Sequence[tuple[str, dict[str, float | None]]]) -> str:
    """Table 1 layout: a label, then Head … Ankle and Mean (one decimal, '-' when absent)."""
    width = max([len(label) for label, _ in rows] + [10])
    lines = [" " * width + "  " + " ".join(f"{c:>8}" for c in COLUMNS)]
    for label, values in rows:
        cells = []
        for c in COLUMNS:
            v = values.get(c)
            cells.append(f"{'-':>8}" if v is None else f"{'n/a':>8}" if not math.isfinite(v)
                         else f"{v:8.1f}")  # fmt: skip
        lines.append(f"{label:<{width}}  " + " ".join(cells))
    return "\n".join(lines)


def sweep_rows(sweep: Any, paper: str | None) -> list[tuple[str, dict[str, float | None]]]:
    """One row per ``(N, steps)`` point of a ``SweepResult``, then the paper's row."""
    rows: list[tuple[str, dict[str, float | None]]] = [
        (f"kpdiff  N={n:<2} steps={s}", dict(ap.columns)) for (n, s), ap in sweep.ap.items()
    ]
    if paper in PAPER:
        only = "" if len(PAPER[paper]) == len(COLUMNS) else ", Mean only"
        rows.append((f"DiffPose paper ({PAPER_NAMES[paper]} val{only})", dict(PAPER[paper])))
    return rows


# --------------------------------------------------------------------------- shared steps


def _paper_for(root: str | Path, split: str, choice: str) -> str | None:
    """Which paper row to print: the choice, or (``auto``) the detected annotation format."""
    if choice != "auto":
        return None if choice == "none" else choice
    root = Path(root)
    if (root / "synthetic.json").is_file():
        return None
    from kpdiff.data.posetrack import detect_format, list_annotation_files

    files = list_annotation_files(root, split)
    return detect_format(files[0]) if files else None


# --------------------------------------------------------------------------- train


def _relative_to(path: str, root: str) -> Path | None:
    """``path`` relative to ``root`` when it lies under it (lexically), else ``None``."""
    if path == "gt":
        return None
    try:
        return Path(path).relative_to(Path(root))
    except ValueError:
        return None


def cmd_train(args: argparse.Namespace) -> int:
    from kpdiff.data.checks import preflight
    from kpdiff.engine.config import load_config, split_overrides
    from kpdiff.engine.data import prepare_datasets, resolve_boxes
    from kpdiff.engine.distributed import DistInfo
    from kpdiff.engine.train import train
    from kpdiff.errors import KpdiffInputError

    config_path = Path(args.config) if args.config else CONFIGS / f"{args.dataset}.yaml"
    if not config_path.is_file():
        raise KpdiffInputError(
            f"config {config_path} not found (examples/diffpose/configs/ holds "
            f"{', '.join(d + '.yaml' for d in DATASETS)}; or pass --config)"
        )
    overrides = []
    if args.data:
        overrides.append(f"data.root={args.data}")
        old = load_config(config_path).data
        rel = _relative_to(old.val_boxes, old.root)
        if not args.boxes and rel is not None:  # boxes kept under the root move with it
            overrides.append(f"data.val_boxes={Path(args.data) / rel}")
    if args.boxes:
        overrides.append(f"data.val_boxes={args.boxes}")
    if args.out:
        overrides.append(f"runtime.output_dir={args.out}")
    overrides += split_overrides(args.overrides)
    config = load_config(config_path, overrides)
    main = int(os.environ.get("RANK", "0")) == 0
    say = print if main else (lambda *a, **k: None)
    say(f"config {config_path}" + (f" with {' '.join(overrides)}" if overrides else ""))
    extra = f" {config.model.overrides}" if config.model.overrides.changes() else ""
    say(f"  model {config.model.preset}{extra}")
    say(f"  data {config.data.root} (train {config.data.train_split}, val "
        f"{config.data.val_split} with boxes {config.data.val_boxes})")  # fmt: skip
    say(f"  {config.optim.epochs} epochs, batch {config.optim.batch_size} per process, lr "
        f"{config.optim.lr}, output {config.runtime.output_dir}")  # fmt: skip
    datasets = None
    if config.data.synthetic is None and not args.no_check:
        datasets = prepare_datasets(config, DistInfo())
        errors = [f"train: {e}" for e in preflight(datasets.train, [], None)]
        # the box file the datasets were built with (a path relative to data.root too)
        boxes = resolve_boxes(config.data.val_boxes, Path(config.data.root))
        val = preflight(datasets.val, datasets.val_videos, boxes)
        errors += [f"val: {e}" for e in val]
        if errors:
            raise KpdiffInputError("\n".join(errors))
        say(f"  checked: {len(datasets.train)} training clips, {len(datasets.val)} validation "
            "clips, every frame of their windows exists")  # fmt: skip
    if args.dry_run:
        say("dry run: not training")
        return 0
    result = train(config, resume=args.resume, datasets=datasets)
    hours = f"{result.seconds / 3600:.2f} h" if result.seconds > 3600 else f"{result.seconds:.0f} s"
    say(f"{result.steps} steps in {hours}")
    if result.best_ap is not None:
        say(f"best validation Mean AP {result.best_ap:.1f} ({result.output_dir / 'best'})")
    say(f"evaluate: python benchmarks/posetrack/run.py evaluate {result.output_dir} --sweep")
    return 0


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``kpdiff evaluate-model``'s job (:func:`~kpdiff.engine.evaluate_checkpoint.
    evaluate_checkpoint`, same options, same results.json) with the paper's row beside it."""
    from kpdiff.cli import checkpoint_eval_options
    from kpdiff.engine.distributed import cleanup, init_distributed
    from kpdiff.engine.evaluate_checkpoint import evaluate_checkpoint

    info = init_distributed(args.device)
    try:
        result = evaluate_checkpoint(
            args.checkpoint, **checkpoint_eval_options(args), info=info,
            progress=False if args.quiet else None,
        )  # fmt: skip
    finally:
        cleanup()  # leave the process group (torchrun), as kpdiff evaluate-model does
    if result is None:  # not rank 0
        return 0
    print(f"grid: {', '.join(f'N={n} steps={s}' for n, s in result.sweep.ap)}")
    print()
    print(format_table(sweep_rows(result.sweep, _paper_for(result.data, result.split,
                                                           args.paper))))  # fmt: skip
    print(f"\n{result.sweep.clips} clips in {result.sweep.seconds:.1f} s on {info.device} "
          f"({info.world_size} process(es))")  # fmt: skip
    if args.max_clips is not None and args.max_clips < result.clips:
        print(f"note: only the first {args.max_clips} of {result.clips} clips were evaluated")
    if args.out:
        result.write(args.out)
        print(f"predictions (PoseTrack18 files) and results.json in {args.out}")
    return 0


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    from kpdiff.cli import add_arguments  # no torch: --help stays fast

    parser = argparse.ArgumentParser(
        prog="run.py",
        description=__doc__.split("\n\n")[0],
        epilog="Modes: train | evaluate (run.py MODE --help for each); the sample: smoke.py.",
    )
    sub = parser.add_subparsers(dest="mode", metavar="<mode>")
    t = sub.add_parser("train", help="train with an experiment config (torchrun for several GPUs)")
    t.add_argument(
        "--dataset",
        choices=DATASETS,
        default="posetrack18",
        help="picks examples/diffpose/configs/<dataset>.yaml (default: posetrack18)",
    )
    t.add_argument("--config", default=None, help="experiment YAML instead of --dataset's")
    t.add_argument("--data", default=None, metavar="ROOT", help="shorthand for --set data.root=…")
    t.add_argument(
        "--boxes",
        default=None,
        metavar="gt|FILE",
        help="shorthand for --set data.val_boxes=… (validation boxes)",
    )
    t.add_argument(
        "--out", default=None, metavar="DIR", help="shorthand for --set runtime.output_dir=…"
    )
    t.add_argument(
        "--set",
        "-s",
        action="append",
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        help="override one config field (repeatable)",
    )
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument(
        "--no-check",
        action="store_true",
        help="skip the check that every frame of the clip windows exists",
    )
    t.add_argument(
        "--dry-run", action="store_true", help="resolve the config and run the checks, do not train"
    )
    t.set_defaults(run=cmd_train)
    e = sub.add_parser("evaluate", help="evaluate a checkpoint, print the Table 1 columns")
    add_arguments(e, "evaluate-model")  # the options of `kpdiff evaluate-model`, and its job
    e.add_argument(
        "--paper",
        choices=["auto", "none", *PAPER],
        default="auto",
        help="paper row to print (default: from the annotation format)",
    )
    e.set_defaults(run=cmd_evaluate)
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help stays fast: kpdiff (torch) is imported after it
    from kpdiff.errors import KpdiffInputError

    if args.mode is None:
        parser.print_usage(sys.stderr)
        print("run.py: error: give train or evaluate (see --help)", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (KpdiffInputError, OSError) as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
