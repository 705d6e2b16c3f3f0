"""Evaluate a saved checkpoint on a dataset split: the one job behind ``kpdiff evaluate-model``
and ``benchmarks/posetrack/run.py evaluate``.

    result = evaluate_checkpoint("runs/x", data="/data/posetrack18", num_samples=[1, 10])
    print(result.sweep.table())
    result.write("eval/")      # PoseTrack18 prediction files per (N, steps) and results.json

The data settings are those the model was trained with: the run's ``experiment.yaml`` (in the
checkpoint folder or one folder up), or ``config=``; each argument given overrides its field. So
the same checkpoint scores the same, whichever command runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdiff.data.schemas import KeypointSchema
from kpdiff.engine.evaluate import SweepResult
from kpdiff.errors import KpdiffInputError

__all__ = ["CheckpointEvaluation", "evaluate_checkpoint", "resolve_checkpoint"]


@dataclass
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` measured, and on what.

    Attributes:
        checkpoint: the ``save_pretrained`` folder evaluated.
        config_path: the experiment YAML whose data settings applied, or ``None``.
        data, split, boxes, edge, min_box_score: the data settings used (``boxes``: ``"gt"`` or
            a detector-box file).
        schema: the keypoint schema.
        clips: clips in the dataset (``sweep.clips`` were evaluated).
        sweep: the AP per ``(N, steps)`` point, the predictions and the time.
    """

    checkpoint: Path
    config_path: Path | None
    data: str
    split: str
    boxes: str
    edge: str
    min_box_score: float
    schema: KeypointSchema
    clips: int
    sweep: SweepResult

    def to_dict(self) -> dict[str, Any]:
        """``results.json``: the settings and ``results`` ``{"n10_steps4": {columns…}}`` (no
        timings: two evaluations of one checkpoint write the same bytes)."""
        return {
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "split": self.split,
            "boxes": self.boxes,
            "edge": self.edge,
            "min_box_score": self.min_box_score,
            "schema": self.schema.name,
            "clips": self.sweep.clips,
            "results": {f"n{n}_steps{s}": ap.to_dict() for (n, s), ap in self.sweep.ap.items()},
        }

    def write(self, out: str | Path) -> Path:
        """PoseTrack18 prediction files in ``out/pred_n{N}_steps{S}/`` and ``out/results.json``
        (atomically); returns ``out``."""
        from kpdiff.engine.evaluate import write_predictions
        from kpdiff.io import write_json_atomic

        out = Path(out)
        for (n, s), videos in self.sweep.predictions.items():
            write_predictions(videos, out / f"pred_n{n}_steps{s}", self.schema)
        write_json_atomic(self.to_dict(), out / "results.json")
        return out


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The ``save_pretrained`` folder of ``checkpoint``: itself, a run's ``best/``, or the run's
    latest ``checkpoints/step-…``.

    Raises:
        KpdiffInputError: nothing of the kind at ``checkpoint``.
    """
    from kpdiff.engine.checkpoint import latest_checkpoint
    from kpdiff.hub import CONFIG_NAME

    path = Path(checkpoint)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "best" / CONFIG_NAME).is_file():
        return path / "best"
    if path.is_dir() and (latest := latest_checkpoint(path)) is not None:
        return latest
    if not path.exists():
        raise KpdiffInputError(f"checkpoint: {path} does not exist")
    return path  # from_pretrained names what is missing


def _experiment(checkpoint: Path, config: str | Path | None, overrides: Sequence[str]) -> Any:
    """``(ExperimentConfig, path)`` whose data settings apply: ``config``, else the run's own
    ``experiment.yaml`` (in the checkpoint folder or one folder up), else ``(None, None)``."""
    from kpdiff.engine.config import load_config, split_overrides

    pairs = split_overrides(list(overrides))
    if config is not None:
        return load_config(config, pairs), Path(config)
    # a checkpoint folder holds its run's experiment.yaml; best/ sits beside the run's own
    for candidate in (checkpoint / "experiment.yaml", checkpoint.parent / "experiment.yaml"):
        if candidate.is_file():
            return load_config(candidate, pairs), candidate
    if overrides:
        raise KpdiffInputError("--set: no experiment.yaml beside the checkpoint to apply it to")
    return None, None


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    boxes: str | Path | None = None,
    edge: str | None = None,
    min_box_score: float | None = None,
    schema: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    num_samples: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    full_sweep: bool = False,
    batch_size: int = 64,
    max_clips: int | None = None,
    seed: int = 0,
    amp: str = "none",
    info: Any = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> CheckpointEvaluation | None:
    """Evaluate ``checkpoint`` on a PoseTrack-layout split over an N × steps grid.

    Args:
        checkpoint: a ``save_pretrained`` folder, a run folder (its ``best/``, else its latest
            checkpoint).
        data: the dataset root. Default: the experiment's ``data.root``.
        split: the split. Default: the experiment's ``data.val_split``, else ``"val"``.
        boxes: ``"gt"`` or a detector-box file. Default: the experiment's ``data.val_boxes``,
            else ``"gt"``.
        edge: neighbour frames beyond a video's ends, ``"clamp"`` or ``"repeat"``. Default: the
            experiment's ``data.edge``, else ``"clamp"``.
        min_box_score: detector boxes below are dropped. Default: the experiment's, else
            :data:`~kpdiff.data.detections.DEFAULT_MIN_SCORE` (0.2).
        schema: keypoint schema name. Default: the experiment's, else the checkpoint's, else
            ``"posetrack"``.
        config: an experiment YAML to take the data settings from instead of the run's own.
        overrides: ``section.field=value`` strings applied to that experiment.
        num_samples, steps: the grid. Default: the experiment's ``eval.num_samples`` /
            ``eval.steps``, else ``[10]`` / ``[4]``.
        full_sweep: the experiment's whole sweep grid (``eval.sweep_num_samples`` ×
            ``eval.sweep_steps``, else 1/5/10 × 1/2/4) instead. Default ``False``.
        batch_size: clips per batch. Default ``64``. max_clips: only the first clips.
        seed: sampling noise seed. Default ``0``.
        amp: autocast on CUDA: ``"bf16"``, ``"fp16"`` or ``"none"``. Default ``"none"``.
        info: the process' :class:`~kpdiff.engine.distributed.DistInfo` (DDP shards the clips).
            Default: one process on the CPU.
        progress: a clips/s bar (``None``: on a terminal). log: where the lines go (rank 0).

    Returns:
        A :class:`CheckpointEvaluation` on rank 0, ``None`` on the other ranks.

    Raises:
        KpdiffInputError: a missing checkpoint, data root or box file, a schema that would
            relabel the model's joints, frames of clip windows that do not exist, or detector
            boxes that match no labelled frame.
    """
    from kpdiff.data.checks import preflight
    from kpdiff.data.clips import TopDownClipDataset
    from kpdiff.data.posetrack import read_posetrack
    from kpdiff.data.schemas import get_schema
    from kpdiff.diffpose import DiffPose
    from kpdiff.engine.config import ExperimentConfig
    from kpdiff.engine.data import resolve_boxes
    from kpdiff.engine.distributed import DistInfo, amp_dtype
    from kpdiff.engine.evaluate import evaluate_model

    info = info or DistInfo()
    path = resolve_checkpoint(checkpoint)
    experiment, config_path = _experiment(path, config, overrides)
    # without an experiment, its defaults; but no default data root, and the model's schema
    d, ev = (experiment or ExperimentConfig()).data, (experiment or ExperimentConfig()).eval
    root = data if data is not None else (d.root if experiment is not None else None)
    if root is None:
        raise KpdiffInputError("--data: required (no experiment.yaml beside the checkpoint)")
    model = DiffPose.from_pretrained(path).to(info.device)
    split, boxes, edge = split or d.val_split, str(boxes or d.val_boxes), edge or d.edge
    min_box_score = d.min_box_score if min_box_score is None else min_box_score
    name = schema or (d.schema if experiment is not None else model.config.schema) or "posetrack"
    keypoints = get_schema(name)
    model.config.check_schema(keypoints, "--schema")
    box_file = resolve_boxes(boxes, Path(root), "--boxes")  # None for "gt"
    if full_sweep:
        ns, ss = ev.sweep_num_samples, ev.sweep_steps
    else:
        ns, ss = num_samples or [ev.num_samples], steps or [ev.steps]
    grid = [(n, s) for n in ns for s in ss]

    videos = read_posetrack(root, split=split, schema=keypoints)
    dataset = TopDownClipDataset.from_videos(
        videos, root, detections=box_file, schema=keypoints,
        config=model.data_config(edge=edge, min_box_score=min_box_score),
    )  # fmt: skip
    problems = preflight(dataset, videos, box_file)
    if problems:
        raise KpdiffInputError("\n".join(problems))
    if info.is_main:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        c = model.config
        log(f"checkpoint {path} ({params:.1f} M parameters, δ = {c.delta}, input "
            f"{tuple(c.input_size)})" + (f"; data settings from {config_path}" if config_path
                                         else ""))  # fmt: skip
        labelled = sum(f.is_labeled for v in videos for f in v.frames)
        source = "ground-truth boxes" if boxes == "gt" else boxes
        log(f"{root} ({split}): {len(videos)} videos, {labelled} labelled frames; "
            f"{len(dataset)} clips from {source}")  # fmt: skip
    sweep = evaluate_model(
        model, dataset, videos, sweep=grid, batch_size=batch_size, seed=seed, info=info,
        max_clips=max_clips, schema=keypoints, autocast_dtype=amp_dtype(amp, info.device),
        progress=progress,
    )  # fmt: skip
    if sweep is None:
        return None
    return CheckpointEvaluation(
        path, config_path, str(root), split, boxes, edge, float(min_box_score), keypoints,
        len(dataset), sweep,
    )  # fmt: skip
