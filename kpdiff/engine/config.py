"""Experiment configuration: dataclasses, YAML files that map onto them, command-line overrides.

One YAML file holds one :class:`ExperimentConfig`; every key must name a field (unknown keys are
errors, not silently ignored), and ``section.field=value`` overrides change single fields:

    cfg = load_config("examples/diffpose/configs/synthetic_cpu.yaml", ["optim.lr=1e-3"])

In Python the sections are dataclasses: ``ExperimentConfig(optim=OptimConfig(lr=1e-3))``.
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from kpdiff.data.clips import AugmentConfig
from kpdiff.data.detections import DEFAULT_MIN_SCORE
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
        overrides: ``DiffPoseConfig`` fields to change from the preset (e.g. ``{"delta": 0}``).
            Default ``{}``.
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
    overrides: dict[str, Any] = field(default_factory=dict)
    pretrained_backbone: str | None = None
    compile_decoder: bool = False
    custom: dict[str, Any] | None = None


@dataclass
class DataConfig:
    """Where the data comes from and how clips are cut (δ and the crop size come from the model).

    Args:
        root: dataset root in the PoseTrack18 layout (``images/``, ``annotations/<split>/``),
            or a PoseTrack17/21 root. Default ``"data/synthetic"``.
        schema: keypoint schema name. Default ``"posetrack"``.
        synthetic: build the built-in synthetic dataset at ``root`` when it is not there yet.
            Default ``True``.
        synthetic_videos: videos of the synthetic training split. Default ``20``.
        synthetic_frames: frames per synthetic training video. Default ``30``.
        synthetic_val_videos: videos of the synthetic validation split; ``None``: as
            ``synthetic_videos``. Default ``None``.
        synthetic_val_frames: frames per synthetic validation video; ``None``: as
            ``synthetic_frames``. Default ``None``.
        synthetic_seed: seed of the synthetic set. Default ``0``.
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
    synthetic: bool = True
    synthetic_videos: int = 20
    synthetic_frames: int = 30
    synthetic_val_videos: int | None = None
    synthetic_val_frames: int | None = None
    synthetic_seed: int = 0
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
        """Plain dict (tuples as lists), the form written to YAML/JSON."""
        return json.loads(json.dumps(asdict(self)))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check and convert ``value`` to the annotated type ``tp`` (the subset used above)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except KpdiffInputError as err:
                errors.append(str(err))
        raise KpdiffInputError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise KpdiffInputError(f"{where}: expected a list, got {value!r}")
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_convert(v, item, where) for v in value)
        if len(value) != len(args):
            raise KpdiffInputError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise KpdiffInputError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise KpdiffInputError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            raise KpdiffInputError(
                f"{where}: expected a finite number, got an integer of {len(str(value))} digits"
            ) from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KpdiffInputError(f"{where}: expected an integer, got {value!r}")
        if abs(value) >= 2**63:
            raise KpdiffInputError(
                f"{where}: expected an integer below 2^63, got one of {len(str(value))} digits"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise KpdiffInputError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise KpdiffInputError(f"{where}: expected a string, got {value!r}")
        return value
    if is_dataclass(tp):
        return _build(tp, value, where)
    raise KpdiffInputError(f"{where}: unsupported type {tp}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise KpdiffInputError(
            f"{where or 'config'}: expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KpdiffInputError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict, checking every key and type.

    Args:
        data: ``{"model": {...}, "optim": {...}, ...}``; missing sections keep their defaults.
        source: names the origin in error messages (a file path). Default ``"config"``.
    """
    try:
        config = _build(ExperimentConfig, {} if data is None else data, "")
        _check_values(config)
    except KpdiffInputError as err:
        raise KpdiffInputError(f"{source}: {err}") from None
    return config


_CHOICES = {
    ("data", "edge"): ("clamp", "repeat"),
    ("runtime", "amp"): ("bf16", "fp16", "none"),
    ("optim", "schedule"): ("step", "cosine"),
}


def check_config(config: ExperimentConfig) -> None:
    """Check the values of a config built in Python (files and overrides are checked already).

    Raises:
        KpdiffInputError: naming the first field whose value cannot work (a negative or NaN
            learning rate, ``max_steps: 0``, a reversed ``scale_range``, …).
    """
    _check_values(config)


def _number(
    where: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    none: bool = False,
) -> None:
    """``value`` must be a finite number in ``[low, high]`` (``(low, high]`` with
    ``low_open``), or ``None`` with ``none``."""
    if value is None and none:
        return
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad:
        try:
            number = float(value)  # an int beyond float's range (10^400) does not fit
        except OverflowError:
            number = math.inf
        bad = (
            not math.isfinite(number)
            or number > high
            or (number <= low if low_open else number < low)
        )
    if bad:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        want = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number {lo}"
        raise KpdiffInputError(
            f"{where}: expected {want}{' or null' if none else ''}, got {value!r}"
        )


def _check_values(config: ExperimentConfig) -> None:
    """Values that have the right type but cannot work (checked now, not hours into a run)."""
    for (section, name), choices in _CHOICES.items():
        value = getattr(getattr(config, section), name)
        if value not in choices:
            raise KpdiffInputError(f"{section}.{name}: expected one of {choices}, got {value!r}")
    device = config.runtime.device
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise KpdiffInputError(
            f"runtime.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        )
    for section, name in (("optim", "batch_size"), ("optim", "epochs"), ("eval", "batch_size"),
                          ("eval", "num_samples"), ("eval", "steps"),
                          ("runtime", "log_every")):  # fmt: skip
        if getattr(getattr(config, section), name) < 1:
            raise KpdiffInputError(f"{section}.{name}: expected >= 1")
    for section, name in (("data", "workers"), ("eval", "every"), ("runtime", "threads"),
                          ("optim", "warmup_steps")):  # fmt: skip
        value = getattr(getattr(config, section), name)
        if value < 0:
            raise KpdiffInputError(f"{section}.{name}: expected an integer >= 0, got {value}")
    project = config.runtime.wandb_project
    if not isinstance(project, str) or not project.strip() or "/" in project or len(project) > 128:
        raise KpdiffInputError(
            f"runtime.wandb_project: expected a W&B project name (1-128 characters, no '/'), "
            f"got {project!r}"
        )
    optim = config.optim
    _number("optim.lr", optim.lr, low=0, low_open=True)
    _number("optim.weight_decay", optim.weight_decay, low=0)
    _number("optim.gamma", optim.gamma, low=0, low_open=True)
    _number("optim.grad_clip", optim.grad_clip, low=0, low_open=True, none=True)
    _number("optim.min_lr_ratio", optim.min_lr_ratio, low=0, high=1)
    if optim.max_steps is not None and optim.max_steps < 1:
        raise KpdiffInputError(
            f"optim.max_steps: expected >= 1 or null (all epochs), got {optim.max_steps}"
        )
    if any(m < 1 for m in optim.milestones):
        raise KpdiffInputError(
            f"optim.milestones: expected epochs >= 1, got {list(optim.milestones)}"
        )
    if optim.ema_decay is not None and not 0 < optim.ema_decay < 1:
        raise KpdiffInputError(
            f"optim.ema_decay: expected in (0, 1) or null, got {optim.ema_decay}"
        )
    _number("data.min_box_score", config.data.min_box_score, low=-math.inf)
    augment = config.data.augment
    _number("data.augment.rotation", augment.rotation, low=0)
    for name in ("rotation_prob", "flip_prob", "half_body_prob"):
        _number(f"data.augment.{name}", getattr(augment, name), low=0, high=1)
    low, high = augment.scale_range
    _number("data.augment.scale_range", low, low=0, low_open=True)
    _number("data.augment.scale_range", high, low=0, low_open=True)
    if low > high:
        raise KpdiffInputError(
            f"data.augment.scale_range: expected [low, high] with low <= high, got {[low, high]}"
        )
    if augment.half_body_min_joints < 0:
        raise KpdiffInputError(
            f"data.augment.half_body_min_joints: expected >= 0, got {augment.half_body_min_joints}"
        )
    if augment.upper_body is not None and any(j < 0 for j in augment.upper_body):
        raise KpdiffInputError(
            f"data.augment.upper_body: expected joint ids >= 0, got {list(augment.upper_body)}"
        )
    data = config.data
    for name in ("synthetic_videos", "synthetic_frames", "synthetic_val_videos",
                 "synthetic_val_frames"):  # fmt: skip
        value = getattr(data, name)
        if value is not None and value < 1:
            raise KpdiffInputError(f"data.{name}: expected >= 1, got {value}")
    if config.eval.max_clips is not None and config.eval.max_clips < 1:
        raise KpdiffInputError("eval.max_clips: expected >= 1 or null (all clips)")
    from kpdiff.diffpose import PRESETS  # the model's options (imported late: timm, diffusers)

    preset = config.model.preset
    if preset not in PRESETS:
        raise KpdiffInputError(f"model.preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    try:
        PRESETS[preset].replace(**config.model.overrides)
    except (KpdiffInputError, TypeError) as err:
        raise KpdiffInputError(f"model.overrides: {err}") from None


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Return a copy of ``config`` with ``section.field=value`` overrides applied.

    Values are parsed as YAML (``optim.lr=1e-3``, ``optim.milestones=[5,8]``,
    ``model.overrides={delta: 0}``, ``data.val_boxes=gt``); nested sections take a longer path
    (``data.augment.rotation=30``).
    """
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise KpdiffInputError(f"override {item!r}: expected section.field=value")
        *parents, name = key.split(".")
        node = data
        for part in parents:  # sections and nested dataclasses (data.augment.rotation=30)
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            raise KpdiffInputError(f"override {item!r}: unknown key {key}")
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
