"""The values of an experiment config that have the right type but cannot work.

:func:`check_config` runs on every config read from a file or built in Python before a run
starts, so a negative learning rate or a reversed scale range fails now, not hours into a run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.errors import KpdiffInputError

if TYPE_CHECKING:
    from kpdiff.engine.config import DataConfig, ExperimentConfig

__all__ = ["check_config"]


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
    if config.eval.max_clips is not None and config.eval.max_clips < 1:
        raise KpdiffInputError("eval.max_clips: expected >= 1 or null (all clips)")
    _check_synthetic(config.data)
    config.model.diffpose_config()  # the preset exists and the overrides make a valid model


def _check_synthetic(data: DataConfig) -> None:
    """``data.synthetic`` is drawn in ``data.schema`` with that schema's registered rig."""
    synthetic = data.synthetic
    if synthetic is None:
        return
    if not isinstance(synthetic, SyntheticConfig):
        raise KpdiffInputError(
            f"data.synthetic: expected a SyntheticConfig (or null: never build), got "
            f"{synthetic!r:.80}"
        )
    schema = synthetic.schema if isinstance(synthetic.schema, str) else synthetic.schema.name
    if schema != SyntheticConfig.schema and schema.lower() != data.schema.lower():
        raise KpdiffInputError(
            f"data.synthetic.schema: the set is drawn in data.schema ({data.schema}); got "
            f"{schema!r} (leave it out, or set data.schema)"
        )
    if synthetic.rig is not None:
        raise KpdiffInputError(
            "data.synthetic.rig: the set is drawn with the rig registered for data.schema "
            "(kpdiff.data.synthetic.register_rig); expected null"
        )
