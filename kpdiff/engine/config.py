"""Experiment configuration: dataclasses, YAML files that map onto them, command-line overrides.

One YAML file holds one :class:`ExperimentConfig`; every key must name a field (unknown keys are
errors, not silently ignored), and ``section.field=value`` overrides change single fields:

    cfg = load_config("examples/diffpose/configs/synthetic_cpu.yaml", ["optim.lr=1e-3"])

In Python the sections are dataclasses: ``ExperimentConfig(optim=OptimConfig(lr=1e-3))``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from kpdiff.data.clips import AugmentConfig
from kpdiff.data.detections import DEFAULT_MIN_SCORE
from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.diffpose_config import PRESETS, DiffPoseConfig, DiffPoseOverrides
from kpdiff.engine.config_checks import check_config
from kpdiff.engine.yaml_types import build_dataclass
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_text_atomic

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "load_config",
    "save_config",
    "split_overrides",
]


@dataclass
class ModelConfig:
    """Which model to build.

    Args:
        preset: a ``DiffPose.from_preset`` name. Default ``"diffpose-tiny"``.
        overrides: the ``DiffPoseConfig`` options to change from the preset, a typed
            :class:`~kpdiff.DiffPoseOverrides` (``DiffPoseOverrides(delta=0)``); a mapping of
            option names (``{"delta": 0}``, a YAML file's form) is checked and converted when
            given or assigned. Default none.
        pretrained_backbone: local path of backbone weights (timm / MAE / ViTPose state dict),
            or ``None``. Default ``None``.
        compile_decoder: wrap the per-step decoder in ``torch.compile``. Default ``False``.
        custom: a record, written by :func:`~kpdiff.engine.train` into the run's
            ``experiment.yaml``, of the model it was given (``train(config, model=…)``) instead
            of building ``preset`` + ``overrides``: ``{"class": "module.Class", "config":
            model.config.to_dict() or None, "parameters": count}``; ``None`` when ``train`` built
            the model. A record only: ``train`` never reads it, and replaces a value given in a
            config with its own. Default ``None``.
    """

    preset: str = "diffpose-tiny"
    overrides: DiffPoseOverrides = field(default_factory=DiffPoseOverrides)
    pretrained_backbone: str | None = None
    compile_decoder: bool = False
    custom: dict[str, Any] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "overrides":  # a mapping of option names is checked and typed here
            try:
                value = DiffPoseOverrides.coerce(value)
            except KpdiffInputError as err:
                raise KpdiffInputError(f"model.overrides: {err}") from None
        super().__setattr__(name, value)

    def diffpose_config(self) -> DiffPoseConfig:
        """The model this section describes: ``PRESETS[preset]`` with ``overrides``."""
        if self.preset not in PRESETS:
            raise KpdiffInputError(
                f"model.preset: expected one of {sorted(PRESETS)}, got {self.preset!r}"
            )
        try:
            return self.overrides.apply(PRESETS[self.preset])
        except KpdiffInputError as err:
            raise KpdiffInputError(f"model.overrides: {err}") from None


@dataclass
class DataConfig:
    """Where the data comes from and how clips are cut (δ and the crop size come from the model).

    Args:
        root: dataset root in the PoseTrack18 layout (``images/``, ``annotations/<split>/``),
            or a PoseTrack17/21 root. Default ``"data/synthetic"``.
        schema: keypoint schema name. Default ``"posetrack"``.
        synthetic: the built-in synthetic set to build at ``root`` when it is not there yet, a
            :class:`~kpdiff.data.synthetic.SyntheticConfig` (videos and frames per split,
            seed, occluders, detector noise, …); ``None``: never build, ``root`` must exist.
            It is drawn in ``schema`` with that schema's registered rig, so its own ``schema``
            is left at its default (or equals ``schema``) and ``rig`` at ``None``.
            Default ``SyntheticConfig()`` (20 videos × 30 frames per split).
        train_split: the training split's name. Default ``"train"``.
        val_split: the validation split's name. Default ``"val"``.
        val_boxes: ``"gt"`` (ground-truth boxes) or the path of a detector-box JSON file
            (DCPose or COCO format); a relative path is looked up from the working folder, then
            under ``root``. Default ``"gt"``.
        min_box_score: detector boxes below this score are dropped. Default ``0.2``.
        edge: neighbour frames beyond the video ends: ``"clamp"`` or ``"repeat"``.
            Default ``"clamp"``.
        augment: training augmentation. Default ``AugmentConfig()`` (DiffPose's: ±45°,
            0.65–1.35, half-body, flip).
        workers: DataLoader worker processes. Default ``0``.
        custom: a record, written by :func:`~kpdiff.engine.train` into the run's
            ``experiment.yaml``, of the datasets it was given (``train(config, datasets=…)``)
            when they are not what this section and the model's geometry describe (another
            class, schema, clip geometry, augmentation, targets or folder, or no validation
            set): ``{"schema": name, "train": {...}, "val": {...} or None}``, each with the
            dataset's class, number of clips and, for a ``TopDownClipDataset``, its clip
            config, augmentation, heatmap size, σ and frames folder. ``None`` when the
            datasets are the ones this section describes. A record only, as ``model.custom``.
            Default ``None``.
    """

    root: str = "data/synthetic"
    schema: str = "posetrack"
    synthetic: SyntheticConfig | None = field(default_factory=SyntheticConfig)
    train_split: str = "train"
    val_split: str = "val"
    val_boxes: str = "gt"
    min_box_score: float = DEFAULT_MIN_SCORE
    edge: str = "clamp"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 0
    custom: dict[str, Any] | None = None


@dataclass
class OptimConfig:
    """AdamW with a milestone (step) schedule, the DiffPose recipe; or warm-up and cosine decay.

    Args:
        lr: initial (peak) learning rate. Default ``5e-4``.
        weight_decay: AdamW weight decay. Default ``1e-4``.
        epochs: training epochs. Default ``60``.
        milestones: epochs at which the lr is multiplied by ``gamma``. Default ``(20, 40)``.
        gamma: lr factor at each milestone. Default ``0.1``.
        batch_size: clips per step (per process). Default ``32``.
        grad_clip: max gradient norm, ``None`` for none. Default ``1.0``.
        max_steps: stop after this many steps in total (``None``: all epochs). Default ``None``.
        schedule: ``"step"`` (``milestones`` × ``gamma``, per epoch: the paper's) or
            ``"cosine"`` (per step, from ``lr`` to ``lr × min_lr_ratio`` over the run).
            Default ``"step"``.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` over the first steps.
            Default ``0``.
        min_lr_ratio: the cosine schedule's final lr over ``lr``. Default ``0.01``.
        ema_decay: keep an exponential moving average of the weights with this decay (ramped up
            as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates); validation, ``best/``
            and the final model then use the averaged weights. ``None``: no average.
            Default ``None``.
    """

    lr: float = 5e-4
    weight_decay: float = 1e-4
    epochs: int = 60
    milestones: tuple[int, ...] = (20, 40)
    gamma: float = 0.1
    batch_size: int = 32
    grad_clip: float | None = 1.0
    max_steps: int | None = None
    schedule: str = "step"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    ema_decay: float | None = None


@dataclass
class EvalConfig:
    """Validation during training and the evaluation sweep.

    Args:
        every: validate every this many epochs (0: only at the end). Default ``1``.
        num_samples: N used for validation. Default ``10``.
        steps: DDIM steps used for validation. Default ``4``.
        sweep_num_samples: the N of the grid evaluated by ``kpdiff evaluate-model`` and the
            demo (the encoder runs once per clip for the whole grid). Default ``(1, 5, 10)``.
        sweep_steps: the DDIM steps of that grid. Default ``(1, 2, 4)``.
        batch_size: clips per evaluation batch. Default ``64``.
        max_clips: evaluate at most this many clips (``None``: all). Default ``None``.
    """

    every: int = 1
    num_samples: int = 10
    steps: int = 4
    sweep_num_samples: tuple[int, ...] = (1, 5, 10)
    sweep_steps: tuple[int, ...] = (1, 2, 4)
    batch_size: int = 64
    max_clips: int | None = None


@dataclass
class RuntimeConfig:
    """Where and how the run executes.

    Args:
        output_dir: checkpoints, logs and predictions go here. Default ``"runs/default"``.
        seed: seeds the initial weights of the model ``train`` builds (a model passed to
            ``train(config, model=…)`` keeps the weights it has), data order, augmentation and
            the diffusion draws (t, noise). Default ``0``.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. Default ``"auto"``.
        amp: autocast dtype on GPU: ``"bf16"``, ``"fp16"`` or ``"none"``. Default ``"bf16"``.
        threads: torch intra-op threads on CPU (``0``: torch's default). Default ``0``.
        log_every: steps between progress/metrics lines. Default ``10``.
        progress: show a progress bar. Default ``True``.
        tensorboard: also log loss, lr, samples/s and validation AP to TensorBoard event files
            in ``output_dir/tensorboard`` (needs the ``tensorboard`` package; see
            :mod:`kpdiff.engine.sinks`). Default ``False``.
        wandb: also log them to Weights & Biases (needs the ``wandb`` package, imported only
            then). Default ``False``.
        wandb_project: the W&B project. Default ``"kpdiff"``.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"
    threads: int = 0
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "kpdiff"


@dataclass
class ExperimentConfig:
    """One experiment: model, data, optimisation, evaluation, runtime.

    Every section has defaults, so a config built in Python names only what it changes:
    ``ExperimentConfig(optim=OptimConfig(max_steps=100), runtime=RuntimeConfig(device="cpu"))``.
    A YAML file holds the same sections as mappings (see ``load_config``).

    Args:
        model: which model ``train`` builds (a preset and its overrides).
        data: where the data comes from and how clips are cut.
        optim: the optimiser, its schedule and the length of the run.
        eval: validation during training and the evaluation sweep.
        runtime: output folder, seed, device, precision and logging.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), the form written to YAML/JSON; ``model.overrides``
        holds only the options it sets."""
        data = _plain(self)
        data["model"]["overrides"] = _plain(self.model.overrides.changes())
        return data


def _plain(obj: Any) -> Any:
    """A dataclass (nested ones too) or a value as JSON types: dicts, lists, scalars."""
    return json.loads(json.dumps(asdict(obj) if is_dataclass(obj) else obj))


def config_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict, checking every key and type.

    Args:
        data: ``{"model": {...}, "optim": {...}, ...}``; missing sections keep their defaults.
        source: names the origin in error messages (a file path). Default ``"config"``.
    """
    try:
        config = build_dataclass(
            ExperimentConfig, _upgrade({} if data is None else data, source), ""
        )
        check_config(config)
    except KpdiffInputError as err:
        raise KpdiffInputError(f"{source}: {err}") from None
    return config


_LEGACY_SYNTHETIC = ("synthetic_videos", "synthetic_frames", "synthetic_val_videos",
                     "synthetic_val_frames", "synthetic_seed")  # fmt: skip


def _upgrade(data: Any, source: str) -> Any:
    """An experiment written before ``data.synthetic`` nested a ``SyntheticConfig`` (run folders
    of kpdiff 0.1: ``synthetic: true`` and ``synthetic_videos``, ``synthetic_frames``,
    ``synthetic_val_videos``, ``synthetic_val_frames``, ``synthetic_seed``) → today's layout,
    drawing the same videos (the same build hash). Other data is returned as it is."""
    section = data.get("data") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return data
    legacy = [k for k in _LEGACY_SYNTHETIC if k in section]
    if not legacy and not isinstance(section.get("synthetic"), bool):
        return data
    section = dict(section)
    old = {k: section.pop(k) for k in legacy}
    build = section.pop("synthetic", True)
    if build is False or build is None:
        section["synthetic"] = None
    elif build is True:
        videos, frames = old.get("synthetic_videos", 20), old.get("synthetic_frames", 30)
        val = [old.get("synthetic_val_videos") or videos, old.get("synthetic_val_frames") or frames]
        train_split, val_split = (
            section.get("train_split", "train"),
            section.get("val_split", "val"),
        )
        section["synthetic"] = {
            "num_videos": videos,
            "frames_per_video": frames,
            "seed": old.get("synthetic_seed", 0),
            "split_sizes": {val_split: val} if val_split != train_split else {},
        }
    else:  # a mapping beside the old keys: keep both, so the old keys are named as unknown
        section["synthetic"] = build
        section.update(old)
    if legacy:
        warnings.warn(
            f"{source}: data.{', data.'.join(legacy)} are the old layout; read as "
            f"data.synthetic (num_videos, frames_per_video, split_sizes, seed)",
            FutureWarning,
            stacklevel=3,
        )
    return {**data, "data": section}


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Return a copy of ``config`` with ``section.field=value`` overrides applied.

    Values are parsed as YAML (``optim.lr=1e-3``, ``optim.milestones=[5,8]``,
    ``model.overrides={delta: 0}``, ``data.val_boxes=gt``); nested sections take a longer path
    (``data.augment.rotation=30``).
    """
    data = _plain(config)  # every key, so model.overrides.delta=0 finds its field
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise KpdiffInputError(f"override {item!r}: expected section.field=value")
        *parents, name = key.split(".")
        node = data
        for part in parents:  # sections and nested dataclasses (data.augment.rotation=30)
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            hint = " (now data.synthetic.<field>)" if name in _LEGACY_SYNTHETIC else ""
            raise KpdiffInputError(f"override {item!r}: unknown key {key}{hint}")
        try:
            node[name] = yaml.safe_load(raw)
        except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: 10^5000
            detail = " ".join(str(err).split())
            raise KpdiffInputError(
                f"override {item!r:.80}: value is not valid YAML ({detail[:200]})"
            ) from None
    return config_from_dict(data, "overrides")


def split_overrides(values: Sequence[str] | None) -> list[str]:
    """Command-line ``--set`` values → ``section.field=value`` items.

    Each value holds one or several whitespace-separated items; a word that does not start a
    new ``key=`` belongs to the value before it (``--set "model.overrides={delta: 0}"``).
    """
    out: list[str] = []
    for group in values or []:
        for word in group.split():
            if out and not re.match(r"[A-Za-z_][\w.]*=", word):
                out[-1] += " " + word
            else:
                out.append(word)
    return out


def load_config(path: str | os.PathLike[str], overrides: list[str] = ()) -> ExperimentConfig:  # type: ignore[assignment]
    """Read a YAML experiment file and apply ``section.field=value`` overrides.

    Args:
        path: the YAML file: one mapping per section (``model``, ``data``, ``optim``, ``eval``,
            ``runtime``); missing sections and fields keep their defaults.
        overrides: ``section.field=value`` items, as :func:`apply_overrides` takes them.
            Default none.

    Returns:
        The checked config.

    Raises:
        KpdiffInputError: the file is missing or not YAML, a key names no field, or a value has
            the wrong type or cannot work; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise KpdiffInputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise KpdiffInputError(
            f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason}); expected a YAML "
            f"experiment config"
        ) from None
    except RecursionError:
        raise KpdiffInputError(f"{path}: not a usable YAML config (nested too deeply)") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an integer of 5,000 digits
        detail = " ".join(str(err).split())
        raise KpdiffInputError(f"{path}: not valid YAML ({detail})") from None
    config = config_from_dict(data or {}, str(path))
    return apply_overrides(config, list(overrides)) if overrides else config


def save_config(config: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
