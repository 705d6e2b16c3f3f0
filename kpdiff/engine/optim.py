"""The optimizer side of training: the learning-rate schedule and the weight average (EMA).

:func:`lr_schedule` builds the schedule of ``optim`` (the paper's milestone steps, warm-up, cosine)
over the run's steps; :func:`ema_model` the exponential moving average that validation and
``best/`` use (:func:`averaged`). :func:`~kpdiff.engine.train` builds both and checkpoints them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["averaged", "ema_model", "lr_schedule"]


def lr_schedule(
    optimizer: torch.optim.Optimizer, opt: Any, total: int, per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The lr schedule of ``optim`` and whether it steps per step (else per epoch).

    ``"step"`` without warm-up is the paper's ``MultiStepLR`` over epochs; warm-up or
    ``"cosine"`` give a per-step ``LambdaLR``: ``(s + 1) / warmup`` during warm-up, then the
    milestone factor of the step's epoch, or ``r + (1 − r) · (1 + cos(π · p)) / 2`` with ``p``
    the share of the post-warm-up steps done (the last warm-up step is at the peak, the last
    step at ``lr · r``) and ``r = min_lr_ratio``.
    """
    if opt.schedule == "step" and opt.warmup_steps == 0:
        milestones = list(opt.milestones)
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, opt.gamma), False
    warmup, ratio = opt.warmup_steps, opt.min_lr_ratio

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        if opt.schedule == "cosine":
            done = min(1.0, max(0, step + 1 - warmup) / max(1, total - warmup))
            return ramp * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * done)))
        epoch = step // per_epoch
        return ramp * opt.gamma ** sum(epoch >= m for m in opt.milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def ema_model(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers, or ``None``.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the random
    initial weights do not linger in a short run's average.
    """
    if decay is None:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def averaged(model: nn.Module, ema: AveragedModel | None) -> nn.Module:
    """The model to validate and save: the weight average when there is one."""
    return model if ema is None else ema.module
