"""The ``kpdiff`` command line: ``kpdiff <subcommand> [options]``.

Each subcommand is one function registered with :func:`subcommand`; it receives the parsed
arguments and returns the exit code. Adding one::

    @subcommand("train", help="train a model", arguments=[arg("--config", required=True)])
    def train(args: argparse.Namespace) -> int:
        from kpdiff.engine import train as run  # heavy imports inside, so --help stays fast

        run(args.config)
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

__all__ = ["arg", "build_parser", "main", "subcommand"]

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
    try:
        return args._run(args)
    except (KpdiffInputError, OSError) as e:  # bad input files, unwritable output
        print(f"kpdiff {args.command}: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


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
    ],
)  # fmt: skip
def evaluate(args: argparse.Namespace) -> int:
    """``kpdiff evaluate --gt GT_DIR --pred PRED_DIR [--json OUT]``: print the AP table."""
    from kpdiff.data.posetrack import read_posetrack
    from kpdiff.metrics.posetrack_ap import posetrack_ap

    result = posetrack_ap(read_posetrack(args.gt), read_posetrack(args.pred, predictions=True))
    if args.json:
        result.save_json(args.json)
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
