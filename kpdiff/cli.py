"""The ``kpdiff`` command line: ``kpdiff <subcommand> [options]``.

Each subcommand is one function registered with :func:`subcommand`; it receives the parsed
arguments and returns the exit code. Adding one::

    @subcommand("train", help="train a model", arguments=[arg("--config", required=True)])
    def train(args: argparse.Namespace) -> int:
        from kpdiff.engine import load_config, train as run  # heavy imports inside: fast --help

        run(load_config(args.config))
        return 0

Bad input (:class:`~kpdiff.errors.KpdiffInputError`, an ``OSError`` such as an unwritable output,
unknown options) prints one line on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kpdiff.errors import KpdiffInputError

__all__ = ["add_arguments", "arg", "build_parser", "checkpoint_eval_options", "main", "subcommand"]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class _Command:
    help: str
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Handler


_COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a subcommand, as ``argparse.add_argument(*flags, **kwargs)`` takes it."""
    return flags, kwargs


CHECKPOINT_ARG = arg(
    "checkpoint", metavar="CHECKPOINT",
    help="a save_pretrained folder (RUN/best, RUN/checkpoints/step-…) or a run folder (its best/, "
         "else its latest checkpoint)",
)  # fmt: skip


def subcommand(
    name: str, *, help: str, arguments: Sequence[tuple[tuple[str, ...], dict[str, Any]]] = ()
) -> Callable[[Handler], Handler]:
    """Register the decorated ``fn(args) -> exit code`` as ``kpdiff <name>``.

    Args:
        name: the subcommand's name.
        help: one-line description shown by ``kpdiff --help``.
        arguments: the subcommand's arguments, each made by :func:`arg`.
    """

    def register(fn: Handler) -> Handler:
        _COMMANDS[name] = _Command(help, tuple(arguments), fn)
        return fn

    return register


def add_arguments(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """Add the arguments of ``kpdiff <command>`` to ``parser`` (another tool that runs the same
    job parses the same options: ``benchmarks/posetrack/run.py evaluate``)."""
    for flags, kwargs in _COMMANDS[command].arguments:
        parser.add_argument(*flags, **kwargs)
    return parser


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, no usage dump
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``kpdiff`` parser with every registered subcommand."""
    parser = _Parser(prog="kpdiff", description="Diffusion models over keypoint heatmaps.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, cmd in _COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kpdiff`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Exit codes: 0 success, 2 bad input or usage (one line on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.command is None:
        print(f"kpdiff: error: a command is required: {', '.join(_COMMANDS)} (see kpdiff --help)",
              file=sys.stderr)  # fmt: skip
        return 2
    import warnings

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"kpdiff {args.command}: warning: " + " ".join(str(message).split()),
              file=sys.stderr)  # fmt: skip

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return args._run(args)
    except (KpdiffInputError, OSError) as e:  # bad input files, unwritable output
        print(f"kpdiff {args.command}: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


def _output_folder(argument: str, path: str) -> None:
    """Refuse an output folder that cannot be one, naming the argument (not ``[Errno 17]``)."""
    from pathlib import Path

    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise KpdiffInputError(f"{argument}: {p} exists and is not a folder")
            return


def _output_file(argument: str, path: str) -> None:
    """Refuse an output file path that is a folder or lies below a file, naming the argument."""
    from pathlib import Path

    if Path(path).is_dir():
        raise KpdiffInputError(f"{argument}: {path} is a folder; expected a file name")
    _output_folder(argument, str(Path(path).parent))


# --------------------------------------------------------------------------- subcommands


@subcommand(
    "evaluate",
    help="PoseTrack AP of predictions against ground truth (poseval's protocol)",
    arguments=[
        arg("--gt", required=True, metavar="GT_DIR",
            help="folder of per-video ground-truth JSON files (PoseTrack17 or 18/21 format)"),
        arg("--pred", required=True, metavar="PRED_DIR",
            help="folder of per-video prediction JSON files with the same file names"),
        arg("--json", metavar="OUT", default=None,
            help='also write {"joints": {...}, "columns": {...}} to OUT (atomically)'),
        arg("--frames", choices=["poseval", "labeled"], default=None,
            help="evaluated frames: every frame with a person (poseval; the default) or only "
                 "labelled ones (the default for PoseTrack21)"),
    ],
)  # fmt: skip
def evaluate(args: argparse.Namespace) -> int:
    """``kpdiff evaluate --gt GT_DIR --pred PRED_DIR [--json OUT]``: print the AP table."""
    from kpdiff.metrics.posetrack_ap import evaluate_files

    if args.json:
        _output_file("--json", args.json)
    result = evaluate_files(args.gt, args.pred, frames=args.frames)
    if args.json:
        result.save_json(args.json)
    print(result.table())
    return 0


@subcommand(
    "train",
    help="train a model from an experiment YAML (torchrun for several processes)",
    arguments=[
        arg("config", metavar="CONFIG", help="experiment YAML (see examples/diffpose/configs)"),
        arg("--set", "-s", action="append", metavar="SECTION.FIELD=VALUE", dest="overrides",
            help="override one field, e.g. --set optim.lr=1e-3 (repeatable)"),
        arg("--resume", action="store_true",
            help="continue the run in runtime.output_dir from its latest checkpoint"),
    ],
)  # fmt: skip
def train(args: argparse.Namespace) -> int:
    """``kpdiff train CONFIG [--set k=v ...] [--resume]``."""
    import os

    from kpdiff.engine.config import load_config, split_overrides
    from kpdiff.engine.distributed import cleanup
    from kpdiff.engine.train import train as run

    config = load_config(args.config, split_overrides(args.overrides))
    try:
        result = run(config, resume=args.resume)
    finally:
        cleanup()  # leave the process group (torchrun) before the interpreter exits
    if result.best_ap is not None and os.environ.get("RANK", "0") == "0":  # rank 0 prints
        print(f"best validation Mean AP {result.best_ap:.1f} ({result.output_dir / 'best'})")
    return 0


@subcommand(
    "evaluate-model",
    help="run a trained model on a dataset split, write predictions and print the AP table",
    arguments=[
        CHECKPOINT_ARG,
        arg("--data", default=None, metavar="ROOT",
            help="dataset root, PoseTrack layout (default: the run's experiment.yaml data.root)"),
        arg("--split", default=None, help="split to evaluate (default: the run's, else val)"),
        arg("--boxes", default=None, metavar="gt|FILE",
            help="'gt' for ground-truth boxes or a detector-box JSON file (default: the run's, "
                 "else gt)"),
        arg("--edge", default=None, choices=["clamp", "repeat"],
            help="neighbour frames beyond a video's ends (default: the run's, else clamp)"),
        arg("--min-box-score", type=float, default=None, metavar="S",
            help="drop detector boxes scoring below S (default: the run's, else 0.2)"),
        arg("--config", default=None, metavar="YAML",
            help="take the data settings from this experiment instead of the run's own"),
        arg("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a field of that experiment, e.g. data.val_boxes=dets.json"),
        arg("--num-samples", "-n", type=int, nargs="+", default=None, metavar="N",
            help="ensemble sizes to evaluate (default: the run's eval.num_samples, else 10)"),
        arg("--steps", type=int, nargs="+", default=None, metavar="S",
            help="DDIM step counts to evaluate (default: the run's eval.steps, else 4)"),
        arg("--sweep", action="store_true",
            help="the run's whole N x steps sweep grid (else 1/5/10 x 1/2/4)"),
        arg("--out", default=None, metavar="DIR",
            help="write PoseTrack18 prediction files per grid point and results.json here"),
        arg("--batch-size", type=int, default=64, help="clips per batch (default: 64)"),
        arg("--max-clips", type=int, default=None, help="evaluate only this many clips"),
        arg("--seed", type=int, default=0, help="sampling noise seed (default: 0)"),
        arg("--device", default="auto", help="auto, cpu or cuda (default: auto)"),
        arg("--amp", default="none", choices=["bf16", "fp16", "none"],
            help="autocast on CUDA (default: none)"),
        arg("--schema", default=None,
            help="keypoint schema name (default: the run's, else the checkpoint's, else "
                 "posetrack)"),
        arg("--quiet", "-q", action="store_true",
            help="no progress bar (there is none either when stderr is not a terminal)"),
    ],
)  # fmt: skip
def evaluate_model(args: argparse.Namespace) -> int:
    """``kpdiff evaluate-model CHECKPOINT [--data ROOT] [--num-samples …] [--steps …]``."""
    from kpdiff.engine.distributed import cleanup, init_distributed
    from kpdiff.engine.evaluate_checkpoint import evaluate_checkpoint

    if args.out:
        _output_folder("--out", args.out)
    info = init_distributed(args.device)
    try:
        result = evaluate_checkpoint(
            args.checkpoint, **checkpoint_eval_options(args), info=info,
            progress=False if args.quiet else None, log=lambda line: None,
        )  # fmt: skip
    finally:
        cleanup()
    if result is None:  # not rank 0
        return 0
    for (n, s), ap in result.sweep.ap.items():
        print(f"N = {n}, steps = {s}")
        print(ap.table())
    print(f"{result.sweep.clips} clips in {result.sweep.seconds:.1f} s (encoder once per clip "
          f"for the grid)")  # fmt: skip
    if args.out:
        result.write(args.out)
    return 0


def checkpoint_eval_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~kpdiff.engine.evaluate_checkpoint.evaluate_checkpoint` keywords of parsed
    ``evaluate-model`` arguments (``benchmarks/posetrack/run.py evaluate`` parses the same)."""
    return {
        "data": args.data, "split": args.split, "boxes": args.boxes, "edge": args.edge,
        "min_box_score": args.min_box_score, "schema": args.schema, "config": args.config,
        "overrides": args.overrides, "num_samples": args.num_samples, "steps": args.steps,
        "full_sweep": args.sweep, "batch_size": args.batch_size, "max_clips": args.max_clips,
        "seed": args.seed, "amp": args.amp,
    }  # fmt: skip


@subcommand(
    "predict",
    help="tracked poses on a video (file or folder of frames), boxes from a file or a detector",
    arguments=[
        arg("video", metavar="VIDEO", help="a video file or a folder of frames"),
        arg("--boxes", default=None, metavar="BOXES.json",
            help="person boxes: DCPose (image_name, bbox, score) or COCO detections "
                 "(image_id = frame index); default: run --detector"),
        arg("--detector", default="fasterrcnn_mobilenet_v3_large_fpn",
            choices=["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
                     "fasterrcnn_resnet50_fpn_v2"],
            help="torchvision person detector when no --boxes (default: "
                 "fasterrcnn_mobilenet_v3_large_fpn)"),
        arg("--detector-weights", default=None, metavar="PATH",
            help="the detector's .pth file (default: torchvision's cache, else its download)"),
        arg("--detector-score", type=float, default=0.5, metavar="S",
            help="keep detections scoring at least S (default: 0.5)"),
        arg("--checkpoint", required=True, metavar="DIR", help="a save_pretrained folder"),
        arg("--out", default="outputs/predict", metavar="DIR", help="output folder"),
        arg("--num-samples", "-n", type=int, default=10, help="ensemble size N (default: 10)"),
        arg("--steps", type=int, default=4, help="DDIM steps (default: 4)"),
        arg("--min-box-score", type=float, default=None, metavar="S",
            help="ignore boxes scoring below S (default: 0.2, DCPose's)"),
        arg("--render", choices=["gif", "mp4", "none"], default="gif",
            help="skeleton overlay format (default: gif)"),
        arg("--schema", default=None,
            help="keypoint schema name (default: the checkpoint's, else posetrack)"),
        arg("--quiet", "-q", action="store_true",
            help="no progress bar (there is none either when stderr is not a terminal)"),
    ],
)  # fmt: skip
def predict(args: argparse.Namespace) -> int:
    """``kpdiff predict VIDEO --checkpoint DIR [--boxes BOXES.json] [--out DIR]``."""
    from pathlib import Path

    from kpdiff.detection import PersonDetector
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.predict import VideoPredictor, render_video, save_prediction_json

    _output_folder("--out", args.out)
    if args.boxes is not None and not Path(args.boxes).is_file():
        raise KpdiffInputError(f"--boxes: {args.boxes} does not exist")
    model = DiffPose.from_pretrained(args.checkpoint)
    detector = None
    if args.boxes is None:
        detector = PersonDetector(
            args.detector, args.detector_weights, min_score=args.detector_score
        )
    predictor = VideoPredictor(
        model, num_samples=args.num_samples, steps=args.steps, schema=args.schema,
        detector=detector,
        **({} if args.min_box_score is None else {"min_box_score": args.min_box_score}),
    )  # fmt: skip
    out = Path(args.out)
    result = predictor(args.video, args.boxes, progress=False if args.quiet else None)
    written = [
        result.write_posetrack18(out / f"{result.name}_posetrack18.json"),
        result.write_coco(out / f"{result.name}_coco.json"),
        save_prediction_json(result, out / f"{result.name}_predictions.json"),
    ]
    if args.render != "none":
        written.append(render_video(result, out / f"{result.name}_overlay.{args.render}"))
    print(f"{len(result.persons)} poses on {len(result.frames)} frames:")
    for path in written:
        print(f"  {path}")
    return 0


@subcommand(
    "export",
    help="export a checkpoint's encoder and decoder step (ONNX, or torch.export) for deployment",
    arguments=[
        CHECKPOINT_ARG,
        arg("--format", choices=["onnx", "torch-export"], default="onnx", dest="fmt",
            help="onnx: encoder.onnx + decoder_step.onnx for the numpy sampler "
                 "(kpdiff.onnx_sampler); torch-export: the same graphs as .pt2 (default: onnx)"),
        arg("--out", default="outputs/export", metavar="DIR",
            help="output folder; sampler.json is written last (default: outputs/export)"),
        arg("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)"),
    ],
)  # fmt: skip
def export(args: argparse.Namespace) -> int:
    """``kpdiff export CHECKPOINT [--format onnx|torch-export] [--out DIR]``."""
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.evaluate_checkpoint import resolve_checkpoint
    from kpdiff.export import export_onnx, export_torch

    _output_folder("--out", args.out)
    if args.fmt == "onnx" and args.opset < 17:  # before the model loads
        raise KpdiffInputError(f"--opset: expected an ONNX opset >= 17, got {args.opset}")
    model = DiffPose.from_pretrained(resolve_checkpoint(args.checkpoint))
    if args.fmt == "onnx":
        report = export_onnx(model, args.out, opset=args.opset)
    else:
        report = export_torch(model, args.out)
    errors = ", ".join(f"{g} {e:.1e}" for g, e in report.max_abs_error.items())
    print(f"exported {args.checkpoint} ({args.fmt}; max |exported − torch| on a test batch: "
          f"{errors}):")  # fmt: skip
    for path in report.files:
        print(f"  {path}")
    return 0


@subcommand(
    "demo",
    help="build the synthetic set, train the small preset on CPU, evaluate N x steps, render",
    arguments=[
        arg("--out", default="outputs/demo", metavar="DIR", help="output folder"),
        arg("--quick", action="store_true", help="a seconds-long smoke run"),
    ],
)  # fmt: skip
def demo(args: argparse.Namespace) -> int:
    """``kpdiff demo [--out DIR] [--quick]``: the README's main command."""
    from kpdiff.engine.demo import run_demo

    _output_folder("--out", args.out)
    run_demo(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
