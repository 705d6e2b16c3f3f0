"""The steps of a training run: epochs of optimizer steps, validation and checkpoints.

:class:`TrainRun` is what the steps of one :func:`~kpdiff.engine.train` call share. Per epoch,
:func:`run_epoch` draws the data order from :class:`EpochSampler` (seeded by ``(seed, epoch)``,
sharded over ranks) and runs :func:`train_step` on each batch; after it :func:`validation_due`
says whether :func:`validate` runs, and :func:`save_run_checkpoint` writes the checkpoint that
resumes the run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Sampler

from kpdiff.engine.checkpoint import get_rng_state, save_checkpoint, save_model
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import Datasets
from kpdiff.engine.distributed import DistInfo, all_gather_objects, barrier, mean
from kpdiff.engine.evaluate import evaluate_model
from kpdiff.engine.optim import averaged
from kpdiff.engine.train_log import MetricsLog, Progress

__all__ = [
    "EpochSampler",
    "TrainRun",
    "run_epoch",
    "save_run_checkpoint",
    "train_step",
    "validate",
    "validation_due",
]


@dataclass
class TrainRun:
    """What the steps of one :func:`train` call share (built by :func:`_setup`)."""

    config: ExperimentConfig
    record: ExperimentConfig  # what experiment.yaml says ran (see experiment_record)
    info: DistInfo
    out: Path
    datasets: Datasets
    model: nn.Module
    loss_module: nn.Module  # the model's loss, DDP-wrapped in a distributed run
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool  # the scheduler steps per step (else per epoch)
    per_epoch: int  # steps per epoch
    total: int  # steps of the whole run
    ema: AveragedModel | None
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    start_time: float
    counters: dict[str, Any] = field(
        default_factory=lambda: {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None}
    )
    losses: dict[int, float] = field(default_factory=dict)
    log: MetricsLog = field(init=False)  # set by _open_outputs
    bar: Progress = field(init=False)
    window_start: float = 0.0  # samples/s: since this time, this many samples
    window_samples: int = 0


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)``, sharded over ranks.

    Every rank gets ``ceil(n / world)`` indices (the permutation wraps around to pad), so all
    ranks run the same number of steps. ``skip`` leaves out the first indices of the shard
    (resuming mid-epoch).
    """

    def __init__(
        self, n: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0
    ) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = math.ceil(n / world)
        perm = (perm * (world + 1))[: per_rank * world]
        self.indices = perm[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def run_epoch(run: TrainRun, stop_after: int | None) -> bool:
    """Train to the end of the current epoch (or of the run); ``True`` when stopped after step
    ``stop_after`` (the epoch then stays open, as a kill would leave it)."""
    config, info, counters = run.config, run.info, run.counters
    epoch = counters["epoch"]
    sampler = EpochSampler(
        len(run.datasets.train),
        seed=config.runtime.seed,
        epoch=epoch,
        rank=info.rank,
        world=info.world_size,
        skip=counters["batch_in_epoch"] * config.optim.batch_size,
    )
    loader = DataLoader(
        run.datasets.train,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.data.workers,
        persistent_workers=False,
        # Its own generator: the loader's base-seed draw (worker seeds) must not consume the
        # global RNG, so validating or not does not change the training draws that follow.
        generator=torch.Generator().manual_seed(
            config.runtime.seed * 100_003 + 7919 * info.rank + epoch
        ),
    )
    run.loss_module.train()
    for batch in loader:
        train_step(run, batch, epoch)
        if stop_after is not None and counters["step"] >= stop_after:
            return True
        if counters["step"] >= run.total or counters["batch_in_epoch"] >= run.per_epoch:
            break
    if counters["batch_in_epoch"] >= run.per_epoch:  # epoch complete
        counters["epoch"] += 1
        counters["batch_in_epoch"] = 0
        if not run.per_step:
            run.scheduler.step()
    return False


def train_step(run: TrainRun, batch: dict[str, torch.Tensor], epoch: int) -> None:
    """One optimizer step on ``batch``; its loss goes to ``run.losses``, the log and the bar."""
    info, opt_cfg, optimizer, scaler = run.info, run.config.optim, run.optimizer, run.scaler
    clips = batch["clip"].to(info.device, non_blocking=True)
    heatmaps = batch["heatmaps"].to(info.device, non_blocking=True)
    weights = batch["weights"].to(info.device, non_blocking=True)
    with torch.autocast(info.device.type, dtype=run.amp, enabled=run.amp is not None):
        loss = run.loss_module(clips, heatmaps, weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if opt_cfg.grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
        grad_norm = float(nn.utils.clip_grad_norm_(run.params, opt_cfg.grad_clip))
    lr = optimizer.param_groups[0]["lr"]  # the lr of this step
    scaler.step(optimizer)  # skipped when fp16 gradients overflowed
    scaler.update()
    if run.per_step:
        run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.counters["step"] += 1
    run.counters["batch_in_epoch"] += 1
    step = run.counters["step"]
    value = mean(loss.item(), info)
    run.losses[step] = value
    run.window_samples += len(clips) * info.world_size
    run.bar.update(1, loss=value, lr=lr)
    if step % run.config.runtime.log_every == 0 or step == run.total:
        rate = run.window_samples / max(time.perf_counter() - run.window_start, 1e-9)
        run.log.write(
            step=step, epoch=epoch, loss=value, lr=lr, grad_norm=grad_norm,
            samples_per_s=round(rate, 2),
        )  # fmt: skip
        run.bar.set(samples_per_s=rate)
        run.window_start, run.window_samples = time.perf_counter(), 0


def validation_due(run: TrainRun) -> bool:
    """Validate now: at the end of the run, and after every ``eval.every``-th epoch."""
    counters, every = run.counters, run.config.eval.every
    finished = counters["step"] >= run.total
    return run.datasets.val is not None and (
        finished
        or (every > 0 and counters["epoch"] % every == 0 and counters["batch_in_epoch"] == 0)
    )


def validate(run: TrainRun) -> None:
    """Mean AP of the (averaged) model on the validation set; ``best/`` when it improved."""
    config, counters, model = run.config, run.counters, averaged(run.model, run.ema)
    sweep = evaluate_model(
        model,
        run.datasets.val,
        run.datasets.val_videos,
        sweep=[(config.eval.num_samples, config.eval.steps)],
        batch_size=config.eval.batch_size,
        seed=config.runtime.seed,
        info=run.info,
        max_clips=config.eval.max_clips,
        schema=run.datasets.schema,
        autocast_dtype=run.amp,
    )
    if sweep is not None:  # rank 0
        ap = next(iter(sweep.ap.values()))
        mean_ap = ap.columns["Mean"]
        improved = counters["best"] is None or mean_ap > counters["best"]
        if improved:
            counters["best"] = mean_ap
            save_model(model, run.out / "best")
        grid = {f"N{n}_steps{s}": r.columns["Mean"] for (n, s), r in sweep.ap.items()}
        run.log.write(
            step=counters["step"], epoch=counters["epoch"], val_mean_ap=mean_ap,
            val_columns=ap.columns, val_grid=grid, best=counters["best"],
            eval_seconds=round(sweep.seconds, 2),
        )  # fmt: skip
    best = [counters["best"]]
    if run.info.distributed:
        torch.distributed.broadcast_object_list(best, src=0)
    counters["best"] = best[0]


def save_run_checkpoint(run: TrainRun) -> None:
    """Write ``checkpoints/step-…`` (rank 0) with every rank's RNG state, for exact resume."""
    rng_states = all_gather_objects(get_rng_state(), run.info)
    if run.info.is_main:
        save_checkpoint(
            run.out,
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            config=run.record,
            counters=run.counters,
            rng_states=rng_states,
            scaler=run.scaler if run.scaler.is_enabled() else None,
            ema=run.ema,
        )
    barrier()
