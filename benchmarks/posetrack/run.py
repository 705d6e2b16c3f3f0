"""Reproduce DiffPose's PoseTrack tables: train, evaluate a checkpoint, print Table 1.

    python benchmarks/posetrack/run.py --smoke        # the real 3-frame PoseTrack18 sample
    python benchmarks/posetrack/run.py train --dataset posetrack18 --data /data/posetrack18
    python benchmarks/posetrack/run.py evaluate runs/posetrack18/best \\
        --data /data/posetrack18 --boxes /data/posetrack18/detections/val_boxes.json --sweep

``train`` runs ``kpdiff.engine.train`` on ``examples/diffpose/configs/<dataset>.yaml`` (or
``--config``) with ``--set section.field=value`` overrides, after checking that every frame its
clip windows read exists and that the detector boxes find their frames. Launch it with
``torchrun --standalone --nproc_per_node=G`` for several GPUs.

``evaluate`` loads a ``save_pretrained`` folder (a run's ``best/``, a checkpoint folder, or the
run folder itself), runs it on a split with ground-truth or detector boxes for every
``(N, steps)`` point (the encoder runs once per clip for the whole grid) and prints the
per-joint table of the paper's Table 1, with the paper's numbers below for comparison. Data
settings default to the run's ``experiment.yaml``.

``--smoke`` runs the whole pipeline on ``../shared/data/posetrack18_sample`` (three labelled
PoseTrack18 val frames and COCO-format detector boxes): reading, clips from ground-truth and
detector boxes, an untrained ``diffpose-tiny`` (or ``--checkpoint``), decoding to image
coordinates, the AP and the prediction files. It exits 0 with a message when the sample is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "diffpose" / "configs"
DATASETS = ("posetrack17", "posetrack18", "posetrack21", "synthetic_cpu")
DEFAULT_SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE", REPO.parent / "shared" / "data" / "posetrack18_sample"
    )
)
SAMPLE_BOXES = "annotations/test_posetrack18_human_detections.json"
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


def _prepare_module() -> Any:
    """``prepare.py`` next to this file (benchmarks/ is not a package)."""
    name = "kpdiff_posetrack_prepare"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("prepare.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


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


def _read_videos(root: str | Path, split: str, schema: Any) -> list:
    from kpdiff.data.posetrack import read_posetrack

    return read_posetrack(root, split=split, schema=schema)


def _clip_dataset(videos, root, model, *, boxes, edge, min_score, schema) -> Any:
    from kpdiff.data.clips import ClipConfig, TopDownClipDataset

    cfg = ClipConfig(
        delta=model.config.delta, input_size=tuple(model.config.input_size), edge=edge,
        min_box_score=min_score,
    )  # fmt: skip
    detections = None if boxes in (None, "gt") else str(boxes)
    return TopDownClipDataset.from_videos(
        videos, root, detections=detections, schema=schema, config=cfg
    )


def _frames_error(dataset: Any, name: str = "") -> str | None:
    """A message naming missing frames of ``dataset``'s clip windows, or ``None``."""
    prep = _prepare_module()
    total, missing = prep.missing_window_frames(dataset)
    if not missing:
        return None
    return (f"{name}: " if name else "") + prep.missing_frames_message(missing, total)


def _boxes_error(videos: list, boxes: Any, min_score: float) -> str | None:
    """A message when no detector box matches a labelled frame (a silent 0 AP), or ``None``."""
    if boxes in (None, "gt"):
        return None
    from kpdiff.data.detections import read_detections

    prep = _prepare_module()
    dets = read_detections(boxes, min_score=min_score)
    labelled, with_box, _ = prep.box_coverage(videos, dets)
    return (
        prep.box_mismatch_message(videos, dets, str(boxes)) if labelled and not with_box else None
    )


def _preflight(dataset: Any, videos: list, boxes: Any, min_score: float) -> list[str]:
    """Errors that would crash a run late or give a silent 0 AP (missing frames, no box)."""
    found = [_frames_error(dataset), _boxes_error(videos, boxes, min_score)]
    return [e for e in found if e]


def _paper_for(root: str | Path, split: str, choice: str) -> str | None:
    """Which paper row to print: the choice, or (``auto``) the detected annotation format."""
    if choice != "auto":
        return None if choice == "none" else choice
    root = Path(root)
    if (root / "synthetic.json").is_file():
        return None
    from kpdiff.data.posetrack import detect_format

    files = _prepare_module().annotation_files(root, split)
    return detect_format(files[0]) if files else None


def _load_model(checkpoint: str | Path, device: Any) -> tuple[Any, Path]:
    """A ``DiffPose`` from a ``save_pretrained`` folder, a run's ``best/`` or its latest step."""
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.checkpoint import latest_checkpoint
    from kpdiff.errors import KpdiffInputError

    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        if (path / "best" / "config.json").is_file():
            path = path / "best"
        elif path.is_dir() and latest_checkpoint(path) is not None:
            path = latest_checkpoint(path)
        elif not path.exists():
            raise KpdiffInputError(f"checkpoint: {path} does not exist")
    return DiffPose.from_pretrained(path).to(device), path


def _experiment_for(checkpoint: Path, config: str | None, overrides: list[str]) -> Any:
    """The experiment whose data settings apply: ``--config``, else the run's own YAML."""
    from kpdiff.engine.config import load_config

    if config:
        return load_config(config, overrides), Path(config)
    for candidate in (checkpoint / "experiment.yaml", checkpoint.parent / "experiment.yaml"):
        if candidate.is_file():
            return load_config(candidate, overrides), candidate
    return None, None


def _amp_dtype(name: str, device: Any) -> Any:
    import torch

    if device.type != "cuda" or name == "none":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


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
    from kpdiff.engine.config import load_config, split_overrides
    from kpdiff.engine.data import prepare_datasets
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
    extra = f" {config.model.overrides}" if config.model.overrides else ""
    say(f"  model {config.model.preset}{extra}")
    say(f"  data {config.data.root} (train {config.data.train_split}, val "
        f"{config.data.val_split} with boxes {config.data.val_boxes})")  # fmt: skip
    say(f"  {config.optim.epochs} epochs, batch {config.optim.batch_size} per process, lr "
        f"{config.optim.lr}, output {config.runtime.output_dir}")  # fmt: skip
    datasets = None
    if not config.data.synthetic and not args.no_check:
        datasets = prepare_datasets(config, DistInfo())
        boxes = None if config.data.val_boxes == "gt" else config.data.val_boxes
        found = [
            _frames_error(datasets.train, "train"),
            _frames_error(datasets.val, "val"),
            _boxes_error(datasets.val_videos, boxes, config.data.min_box_score),
        ]
        errors = [e for e in found if e]
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
    from kpdiff.data.schemas import get_schema
    from kpdiff.engine.config import split_overrides
    from kpdiff.engine.distributed import init_distributed
    from kpdiff.engine.evaluate import evaluate_model, write_predictions
    from kpdiff.errors import KpdiffInputError
    from kpdiff.io import write_json_atomic

    info = init_distributed(args.device)
    model, ckpt = _load_model(args.checkpoint, info.device)
    config, config_path = _experiment_for(ckpt, args.config, split_overrides(args.overrides))
    data = config.data if config is not None else None
    root = args.data or (data.root if data else None)
    if root is None:
        raise KpdiffInputError("--data: required (no experiment.yaml next to the checkpoint)")
    split = args.split or (data.val_split if data else "val")
    boxes = args.boxes or (data.val_boxes if data else "gt")
    edge = args.edge or (data.edge if data else "clamp")
    min_score = args.min_box_score if args.min_box_score is not None else (
        data.min_box_score if data else 0.2)  # fmt: skip
    schema = get_schema(args.schema or (data.schema if data else "posetrack"))
    if schema.num_keypoints != model.config.num_keypoints:
        raise KpdiffInputError(
            f"--schema: {schema.name} has {schema.num_keypoints} joints, the checkpoint "
            f"{model.config.num_keypoints}"
        )
    if boxes != "gt" and not Path(boxes).is_file():
        raise KpdiffInputError(f"--boxes: {boxes} does not exist (use 'gt' or a JSON file)")
    if args.sweep:
        ns = config.eval.sweep_num_samples if config else (1, 5, 10)
        ss = config.eval.sweep_steps if config else (1, 2, 4)
    else:
        default_n = [config.eval.num_samples] if config else [10]
        default_s = [config.eval.steps] if config else [4]
        ns, ss = args.num_samples or default_n, args.steps or default_s
    grid = [(n, s) for n in ns for s in ss]
    say = print if info.is_main else (lambda *a, **k: None)
    say(
        f"checkpoint {ckpt} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
        f"parameters, δ = {model.config.delta}, input {tuple(model.config.input_size)})"
    )
    if config_path:
        say(f"data settings from {config_path}")
    videos = _read_videos(root, split, schema)
    dataset = _clip_dataset(videos, root, model, boxes=boxes, edge=edge, min_score=min_score,
                            schema=schema)  # fmt: skip
    errors = _preflight(dataset, videos, boxes, min_score)
    if errors:
        raise KpdiffInputError("\n".join(errors))
    labelled = sum(f.is_labeled for v in videos for f in v.frames)
    say(
        f"{root} ({split}): {len(videos)} videos, {labelled} labelled frames; "
        f"{len(dataset)} clips from {'ground-truth boxes' if boxes == 'gt' else boxes}"
    )
    say(f"grid: {', '.join(f'N={n} steps={s}' for n, s in grid)}")  # fmt: skip
    result = evaluate_model(
        model, dataset, videos, sweep=grid, batch_size=args.batch_size, seed=args.seed,
        info=info, max_clips=args.max_clips, schema=schema,
        autocast_dtype=_amp_dtype(args.amp, info.device),
    )  # fmt: skip
    if result is None:  # not rank 0
        return 0
    paper = _paper_for(root, split, args.paper)
    print()
    print(format_table(sweep_rows(result, paper)))
    print(f"\n{result.clips} clips in {result.seconds:.1f} s on {info.device} "
          f"({info.world_size} process(es))")  # fmt: skip
    if args.max_clips is not None and args.max_clips < len(dataset):
        print(f"note: only the first {args.max_clips} of {len(dataset)} clips were evaluated")
    if args.out:
        out = Path(args.out)
        for (n, s), pred in result.predictions.items():
            write_predictions(pred, out / f"pred_n{n}_steps{s}", schema)
        summary = {
            "checkpoint": str(ckpt), "data": str(root), "split": split, "boxes": boxes,
            "edge": edge, "min_box_score": min_score, "clips": result.clips,
            "seconds": result.seconds,
            "results": {f"n{n}_steps{s}": ap.to_dict() for (n, s), ap in result.ap.items()},
        }  # fmt: skip
        write_json_atomic(summary, out / "results.json")
        print(f"predictions (PoseTrack18 files) and results.json in {out}")
    return 0


# --------------------------------------------------------------------------- smoke


def cmd_smoke(args: argparse.Namespace) -> int:
    root = Path(args.data)
    if not (root / "annotations").is_dir():
        print(f"PoseTrack18 sample not found at {root} (set --data or KPDIFF_POSETRACK18_SAMPLE); "
              "smoke test skipped.")  # fmt: skip
        return 0
    start = time.perf_counter()
    import torch

    from kpdiff.data.clips import clip_indices
    from kpdiff.data.detections import read_detections
    from kpdiff.data.posetrack import detect_format, read_posetrack
    from kpdiff.data.schemas import get_schema
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.evaluate import evaluate_model, write_predictions
    from kpdiff.errors import KpdiffInputError
    from kpdiff.metrics import posetrack_ap

    prep = _prepare_module()
    schema = get_schema("posetrack")
    print(f"kpdiff PoseTrack smoke test on {root}")
    files = prep.annotation_files(root, "val")
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
        model, ckpt = _load_model(args.checkpoint, torch.device("cpu"))
        print(f"  model: {ckpt}")
        trained = True
    else:
        model = DiffPose.from_preset("diffpose-tiny", num_keypoints=schema.num_keypoints)
        print(f"  model: diffpose-tiny, UNTRAINED (random weights, seed {args.seed})")
        trained = False
    c = model.config
    print(f"  δ = {c.delta} ({2 * c.delta + 1} frames per clip), input {tuple(c.input_size)}")

    boxes_file = root / SAMPLE_BOXES
    gt_set = _clip_dataset(videos, root, model, boxes="gt", edge="clamp", min_score=0.2,
                           schema=schema)  # fmt: skip
    det_set = _clip_dataset(videos, root, model, boxes=boxes_file, edge="clamp", min_score=0.2,
                            schema=schema)  # fmt: skip
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
    errors = _preflight(gt_set, videos, None, 0.2) + _preflight(det_set, videos, boxes_file, 0.2)
    if errors:
        raise KpdiffInputError("\n".join(errors))
    total = len({p for d in (gt_set, det_set) for p in _windows(d)})
    print(f"  every one of the {total} frame files the clip windows read exists")
    with tempfile.TemporaryDirectory() as tmp:
        dcpose = Path(tmp) / "boxes_dcpose.json"
        n, _ = prep.convert_boxes(boxes_file, dcpose, data=root, split="val")
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
            print(format_table(sweep_rows(result, "posetrack18")))
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


def _windows(dataset: Any) -> set[str]:
    from kpdiff.data.clips import clip_indices

    cfg = dataset.config
    return {
        s.frame_paths[i]
        for s in dataset.samples
        for i in clip_indices(s.key, len(s.frame_paths), cfg.delta, cfg.edge)
    }


def _same_boxes(a: dict, b: dict, frames: list) -> bool:
    from kpdiff.data.detections import boxes_for_frame

    return all(
        boxes_for_frame(a, f).shape == boxes_for_frame(b, f).shape
        and (boxes_for_frame(a, f) == boxes_for_frame(b, f)).all()
        for f in frames
    )


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description=__doc__.split("\n\n")[0],
        epilog="Modes: --smoke | train | evaluate (run.py MODE --help for each).",
    )  # fmt: skip
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run the pipeline on the 3-frame PoseTrack18 sample and exit",
    )
    parser.add_argument(
        "--data",
        dest="smoke_data",
        default=str(DEFAULT_SAMPLE),
        metavar="DIR",
        help=f"--smoke: the sample folder (default: {DEFAULT_SAMPLE})",
    )
    parser.add_argument(
        "--checkpoint",
        dest="smoke_checkpoint",
        default=None,
        metavar="DIR",
        help="--smoke: a save_pretrained folder instead of an untrained diffpose-tiny",
    )
    parser.add_argument(
        "-n",
        "--num-samples",
        dest="smoke_n",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="--smoke: ensemble sizes (default: N=1 with 1 step, N=10 with 4)",
    )
    parser.add_argument(
        "--steps",
        dest="smoke_steps",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="--smoke: DDIM step counts (grid with -n)",
    )
    parser.add_argument(
        "--out",
        dest="smoke_out",
        default=None,
        metavar="DIR",
        help="--smoke: keep the prediction files here",
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
    e.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="save_pretrained folder (RUN/best, RUN/checkpoints/step-…) or RUN",
    )
    e.add_argument(
        "--data",
        default=None,
        metavar="ROOT",
        help="dataset root (default: data.root of the run's experiment.yaml)",
    )
    e.add_argument("--split", default=None, help="split (default: the config's, else val)")
    e.add_argument(
        "--boxes",
        default=None,
        metavar="gt|FILE",
        help="'gt' or a detector-box JSON, DCPose or COCO layout (default: config's)",
    )
    e.add_argument(
        "--config",
        default=None,
        help="experiment YAML for the data defaults (default: the run's own)",
    )
    e.add_argument(
        "--set",
        "-s",
        action="append",
        dest="overrides",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a field of that config",
    )
    e.add_argument(
        "-n",
        "--num-samples",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="ensemble sizes (default: eval.num_samples, else 10)",
    )
    e.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="DDIM steps (default: eval.steps, else 4)",
    )
    e.add_argument(
        "--sweep",
        action="store_true",
        help="the paper's grid N in {1,5,10} x steps in {1,2,4} (eval.sweep_*)",
    )
    e.add_argument(
        "--edge",
        choices=["clamp", "repeat"],
        default=None,
        help="neighbours beyond a video's ends (default: config's, else clamp)",
    )
    e.add_argument(
        "--min-box-score",
        type=float,
        default=None,
        help="drop detector boxes below (default: config's, else 0.2)",
    )
    e.add_argument("--schema", default=None, help="keypoint schema (default: posetrack)")
    e.add_argument("--batch-size", type=int, default=64, help="clips per batch (default: 64)")
    e.add_argument("--max-clips", type=int, default=None, help="evaluate only this many clips")
    e.add_argument("--seed", type=int, default=0, help="sampling noise seed (default: 0)")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    e.add_argument(
        "--amp",
        choices=["bf16", "fp16", "none"],
        default="bf16",
        help="autocast dtype on GPU (default: bf16)",
    )
    e.add_argument(
        "--paper",
        choices=["auto", "none", *PAPER],
        default="auto",
        help="paper row to print (default: from the annotation format)",
    )
    e.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write PoseTrack18 prediction files per grid point and results.json",
    )
    e.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help stays fast: kpdiff (torch) is imported after it
    from kpdiff.errors import KpdiffInputError

    try:
        if args.smoke:
            if args.smoke_n is None and args.smoke_steps is None:
                grid = [(1, 1), (10, 4)]
            else:
                grid = [(n, t) for n in args.smoke_n or [10] for t in args.smoke_steps or [4]]
            smoke = argparse.Namespace(
                data=args.smoke_data, checkpoint=args.smoke_checkpoint, out=args.smoke_out,
                grid=grid, batch_size=64, seed=0,
            )  # fmt: skip
            return cmd_smoke(smoke)
        if args.mode is None:
            parser.print_usage(sys.stderr)
            print("run.py: error: give --smoke, train or evaluate (see --help)", file=sys.stderr)
            return 2
        return args.run(args)
    except (KpdiffInputError, OSError) as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
