"""Training: AdamW + milestone schedule, DDP through torchrun, checkpoints and exact resume.

``train(config)`` is what ``kpdiff train CONFIG`` runs. Exact resume: data order comes from a
permutation seeded by ``(seed, epoch)``, every random draw (augmentation, t, ε) comes from RNGs
whose state is checkpointed (every rank's), so resuming from a checkpoint replays the same batches
and losses, bit for bit on CPU (with the same number of processes and ``data.workers``: worker
processes seed themselves from the loader's own generator, seeded by ``(seed, rank, epoch)``).
Validation draws from generators of its own: validating or not leaves the training draws as
they are.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Sampler

from kpdiff.engine.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_training_state,
    remove_leftovers,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from kpdiff.engine.config import ExperimentConfig, check_config, save_config
from kpdiff.engine.data import Datasets, build_model, prepare_datasets
from kpdiff.engine.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    init_distributed,
    mean,
)
from kpdiff.engine.evaluate import ClipPoseModel, evaluate_model
from kpdiff.engine.sinks import MetricSink, check_sinks, open_sinks
from kpdiff.errors import KpdiffInputError
from kpdiff.io import load_safetensors, write_text_atomic

__all__ = ["TrainResult", "TrainablePoseModel", "train"]


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports.

    Attributes:
        output_dir: the run folder; ``losses``: the loss of every step run in this call,
            ``{step: loss}``; ``best_ap``: best validation Mean AP (``None`` without
            validation); ``steps``: total steps done; ``seconds``: wall time of this call.
    """

    output_dir: Path
    losses: dict[int, float]
    best_ap: float | None
    steps: int
    seconds: float


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


@runtime_checkable
class TrainablePoseModel(ClipPoseModel, Protocol):
    """What :func:`train` needs of a model: :class:`~kpdiff.DiffPose` is one.

    A :class:`~kpdiff.engine.ClipPoseModel` (``condition``, ``predict``: for validation) with
    ``loss(clips [B, T, 3, H, W], heatmaps [B, K, h, w], weights [B, K]) → scalar``: the
    targets are rendered by the engine's datasets (see :func:`train`). Checkpoints hold
    ``save_pretrained(folder)``'s files when the model has that method, else its state dict.
    """

    def loss(
        self, clips: torch.Tensor, heatmaps: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor: ...


class _LossModule(nn.Module):
    """``forward`` = ``model.loss``, so DDP sees a forward and syncs gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, clips: torch.Tensor, heatmaps: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return self.model.loss(clips, heatmaps, weights)


def _autocast_dtype(config: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.runtime.amp == "none":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[config.runtime.amp]


def train(
    config: ExperimentConfig,
    *,
    model: TrainablePoseModel | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    datasets: Datasets | None = None,
) -> TrainResult:
    """Train DiffPose as ``config`` says; with ``resume`` continue the run in its output folder.

    Args:
        config: the experiment.
        model: train this model instead of the DiffPose of ``config.model``: any
            :class:`TrainablePoseModel` (e.g. your own denoiser built from kpdiff's pieces). It
            gets everything the engine does: DDP, autocast, clipping, validation, checkpoints
            and exact resume (build the same model again to resume). ``config.model`` still
            describes the data (``input_size``, ``delta``, ``sigma`` of the targets) unless
            ``datasets`` is given. Default: ``build_model(config)``.
        resume: continue from ``output_dir/checkpoints/latest`` (error when there is none).
        stop_after: stop (without a final checkpoint) after this global step, as a kill would.
            For tests of resuming. Default: run to the end.
        datasets: prepared datasets to use instead of building them from ``config.data``.

    Returns:
        A :class:`TrainResult` (on every rank; files are written by rank 0 only).
    """
    start_time = time.perf_counter()
    if not isinstance(config, ExperimentConfig):
        raise KpdiffInputError(f"config: expected an ExperimentConfig, got {type(config).__name__}")
    check_config(config)  # a config built in Python: the checks its YAML file would get
    check_sinks(config)  # TensorBoard / W&B enabled but not installed: say so before training
    out = Path(config.runtime.output_dir)
    if out.exists() and not out.is_dir():
        raise KpdiffInputError(f"runtime.output_dir: {out} exists and is not a folder")
    info = init_distributed(config.runtime.device)
    if config.runtime.threads > 0:
        torch.set_num_threads(config.runtime.threads)
    if info.is_main:
        remove_leftovers(out)  # what a run killed while writing left behind
    torch.manual_seed(config.runtime.seed)  # same initial weights on every rank
    datasets = datasets or prepare_datasets(config, info)
    if model is None:
        model = build_model(config, num_keypoints=datasets.schema.num_keypoints)
    elif not isinstance(model, nn.Module) or not isinstance(model, TrainablePoseModel):
        raise KpdiffInputError(
            f"model: expected an nn.Module with condition, predict and loss "
            f"(kpdiff.engine.TrainablePoseModel), got {type(model).__name__}"
        )
    model = model.to(info.device)
    if config.model.compile_decoder:
        if not isinstance(getattr(model, "decoder", None), nn.Module):
            raise KpdiffInputError(
                f"model.compile_decoder: {type(model).__name__} has no .decoder module to compile"
            )
        # In place: the state dict keeps its names (torch.compile's wrapper would prefix them
        # with "_orig_mod.", and checkpoints would not load into an uncompiled DiffPose).
        model.decoder.compile()
    loss_module: nn.Module = _LossModule(model)
    if info.distributed:
        loss_module = DistributedDataParallel(
            loss_module, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    opt_cfg = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    per_epoch = math.ceil(len(datasets.train) / info.world_size) // opt_cfg.batch_size
    if per_epoch == 0:
        raise KpdiffInputError(
            f"optim.batch_size: {opt_cfg.batch_size} is larger than the {len(datasets.train)} "
            f"training clips per process"
        )
    total = opt_cfg.epochs * per_epoch
    if opt_cfg.max_steps is not None:
        total = min(total, opt_cfg.max_steps)
    scheduler, per_step = _lr_schedule(optimizer, opt_cfg, total, per_epoch)
    ema = _ema_model(model, opt_cfg.ema_decay)
    amp = _autocast_dtype(config, info.device)
    # fp16 gradients underflow without loss scaling (bf16 and fp32 need none).
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
    counters: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None}
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise KpdiffInputError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        _load_weights(model, ckpt)
        state = load_training_state(ckpt)  # reads JSON and safetensors: never unpickles
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None:
                if "ema" not in state:
                    raise KeyError("ema (the checkpoint has no weight average)")
                ema.load_state_dict(state["ema"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:300]
            raise KpdiffInputError(
                f"{ckpt}: its optimizer state does not fit this config ({detail}); was it "
                f"written by another experiment?"
            ) from None
        counters = dict(state["counters"])
        # Every rank continues its own random streams (augmentation, t, noise).
        per_rank = state["rng_per_rank"]
        try:
            if len(per_rank) == info.world_size:
                set_rng_state(per_rank[info.rank])
            else:  # another number of processes: no exact replay, but distinct streams per rank
                set_rng_state(per_rank[0])
                seed = config.runtime.seed + 7919 * info.rank + 104_729 * counters["step"]
                torch.manual_seed(seed)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:200]
            raise KpdiffInputError(
                f"{ckpt}: damaged RNG state in its training state ({detail})"
            ) from None
    else:
        torch.manual_seed(config.runtime.seed + 7919 * info.rank)  # per-rank augmentation
    if info.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KpdiffInputError(
                f"runtime.output_dir: cannot create {out} ({err.strerror or err})"
            ) from None
        save_config(config, out / "experiment.yaml")
    log = _MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    # A fresh run starts a new log; a resumed one drops what was logged after its checkpoint.
    log.start(keep_until=counters["step"] if resume else None)
    if info.is_main:  # TensorBoard / W&B when runtime enables them
        log.sinks = open_sinks(config, resume_step=counters["step"] if resume else None)
    losses: dict[int, float] = {}
    bar = _Progress(total, enabled=info.is_main and config.runtime.progress)
    bar.update(counters["step"])
    window_start, window_samples = time.perf_counter(), 0
    while counters["step"] < total:
        epoch = counters["epoch"]
        sampler = EpochSampler(
            len(datasets.train),
            seed=config.runtime.seed,
            epoch=epoch,
            rank=info.rank,
            world=info.world_size,
            skip=counters["batch_in_epoch"] * opt_cfg.batch_size,
        )
        loader = DataLoader(
            datasets.train,
            batch_size=opt_cfg.batch_size,
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
        loss_module.train()
        for batch in loader:
            clips = batch["clip"].to(info.device, non_blocking=True)
            heatmaps = batch["heatmaps"].to(info.device, non_blocking=True)
            weights = batch["weights"].to(info.device, non_blocking=True)
            with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                loss = loss_module(clips, heatmaps, weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            grad_norm = None
            if opt_cfg.grad_clip is not None:
                scaler.unscale_(optimizer)  # clip the true gradients
                grad_norm = float(nn.utils.clip_grad_norm_(params, opt_cfg.grad_clip))
            lr = optimizer.param_groups[0]["lr"]  # the lr of this step
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed
            scaler.update()
            if per_step:
                scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            counters["step"] += 1
            counters["batch_in_epoch"] += 1
            step = counters["step"]
            value = mean(loss.item(), info)
            losses[step] = value
            window_samples += len(clips) * info.world_size
            bar.update(1, loss=value, lr=lr)
            if step % config.runtime.log_every == 0 or step == total:
                rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
                log.write(
                    step=step,
                    epoch=epoch,
                    loss=value,
                    lr=lr,
                    grad_norm=grad_norm,
                    samples_per_s=round(rate, 2),
                )
                bar.set(samples_per_s=rate)
                window_start, window_samples = time.perf_counter(), 0
            if stop_after is not None and step >= stop_after:
                bar.close()
                log.close()
                return TrainResult(out, losses, counters["best"], step, _since(start_time))
            if step >= total or counters["batch_in_epoch"] >= per_epoch:
                break
        if counters["batch_in_epoch"] >= per_epoch:  # epoch complete
            counters["epoch"] += 1
            counters["batch_in_epoch"] = 0
            if not per_step:
                scheduler.step()
        finished = counters["step"] >= total
        every = config.eval.every
        if datasets.val is not None and (
            finished
            or (every > 0 and counters["epoch"] % every == 0 and counters["batch_in_epoch"] == 0)
        ):
            _validate(_averaged(model, ema), datasets, config, info, counters, out, log, amp)
        rng_states = all_gather_objects(get_rng_state(), info)  # every rank's, for exact resume
        if info.is_main:
            save_checkpoint(
                out,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                config=config,
                counters=counters,
                rng_states=rng_states,
                scaler=scaler if scaler.is_enabled() else None,
                ema=ema,
            )
        barrier()
    bar.close()
    log.close()
    if info.is_main and datasets.val is None:
        save_model(_averaged(model, ema), out / "best")  # no validation: the final model
    return TrainResult(out, losses, counters["best"], counters["step"], _since(start_time))


def _validate(
    model: nn.Module,
    datasets: Datasets,
    config: ExperimentConfig,
    info: DistInfo,
    counters: dict[str, Any],
    out: Path,
    log: _MetricsLog,
    amp: torch.dtype | None,
) -> None:
    sweep = evaluate_model(
        model,
        datasets.val,
        datasets.val_videos,
        sweep=[(config.eval.num_samples, config.eval.steps)],
        batch_size=config.eval.batch_size,
        seed=config.runtime.seed,
        info=info,
        max_clips=config.eval.max_clips,
        schema=datasets.schema,
        autocast_dtype=amp,
    )
    if sweep is not None:  # rank 0
        ap = next(iter(sweep.ap.values()))
        mean_ap = ap.columns["Mean"]
        improved = counters["best"] is None or mean_ap > counters["best"]
        if improved:
            counters["best"] = mean_ap
            save_model(model, out / "best")
        grid = {f"N{n}_steps{s}": r.columns["Mean"] for (n, s), r in sweep.ap.items()}
        log.write(
            step=counters["step"], epoch=counters["epoch"], val_mean_ap=mean_ap,
            val_columns=ap.columns, val_grid=grid, best=counters["best"],
            eval_seconds=round(sweep.seconds, 2),
        )  # fmt: skip
    best = [counters["best"]]
    if info.distributed:
        torch.distributed.broadcast_object_list(best, src=0)
    counters["best"] = best[0]


def _lr_schedule(
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


def _ema_model(model: nn.Module, decay: float | None) -> AveragedModel | None:
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


def _averaged(model: nn.Module, ema: AveragedModel | None) -> nn.Module:
    """The model to validate and save: the weight average when there is one."""
    return model if ema is None else ema.module


def _load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's weights; weights of another model are a one-line error."""
    state = load_safetensors(checkpoint / "model.safetensors", finite=True)
    own = model.state_dict()
    problems = [f"missing {k}" for k in sorted(set(own) - set(state))]
    problems += [f"unexpected {k}" for k in sorted(set(state) - set(own))]
    problems += [
        f"{k} is {list(v.shape)} in the checkpoint, {list(own[k].shape)} here"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        differ = _config_differences(model, checkpoint)
        raise KpdiffInputError(
            f"{checkpoint}: its weights do not fit this experiment's model ({len(problems)} "
            f"tensors differ, e.g. {'; '.join(problems[:2])}){differ}; was it written by another "
            f"experiment? Resume with the config it was written with ({checkpoint.name}/"
            f"experiment.yaml) or train into another runtime.output_dir"
        )
    model.load_state_dict(state)


def _config_differences(model: nn.Module, checkpoint: Path) -> str:
    """``"; model options that differ: dim 64 vs 32, …"`` from the checkpoint's config.json."""
    try:
        saved = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return ""
    if not isinstance(saved, dict):
        return ""
    config = getattr(model, "config", None)
    if not callable(getattr(config, "to_dict", None)):  # a model of the user's: no config
        return ""
    here = config.to_dict()
    diff = [f"{k} {saved.get(k)!r} vs {here[k]!r}" for k in here if saved.get(k) != here[k]]
    return f"; model options that differ (checkpoint vs here): {', '.join(diff)}" if diff else ""


def _since(start: float) -> float:
    return time.perf_counter() - start


class _MetricsLog:
    """JSON lines, one object per record, appended and flushed (rank 0 only).

    Strict JSON: a NaN or infinite value (a diverged loss, an undefined AP) is written as
    ``null``, never as ``NaN`` / ``Infinity``, which strict JSON readers reject. Every record
    also goes to the ``sinks`` (TensorBoard, W&B: :mod:`kpdiff.engine.sinks`).
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.sinks: list[MetricSink] = []

    def start(self, *, keep_until: int | None) -> None:
        """Start a new log (``None``), or keep only records up to step ``keep_until`` (resume:
        the steps after the checkpoint are run, and logged, again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        if keep_until is not None:
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                step = record.get("step", 0) if isinstance(record, dict) else None
                if isinstance(step, int) and step <= keep_until:
                    kept.append(line + "\n")
        write_text_atomic(self.path, "".join(kept))

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record["time"] = round(time.time(), 3)
        record = _finite_or_null(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        """Close the sinks (``metrics.jsonl`` is closed after every record)."""
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN / infinite float (nested in dicts and lists too) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


class _Progress:
    """A tqdm bar showing loss, lr and samples/s (silent when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.bar = None
        self.extra: dict[str, str] = {}
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="train", dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int, **values: float) -> None:
        if self.bar is not None:
            self.set(**values)
            self.bar.update(n)

    def set(self, **values: float) -> None:
        if self.bar is None:
            return
        for k, v in values.items():
            self.extra[k] = f"{v:.3g}" if k != "loss" else f"{v:.5f}"
        self.bar.set_postfix(self.extra, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
