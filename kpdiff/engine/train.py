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

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Sampler

from kpdiff.data.clips import TopDownClipDataset
from kpdiff.data.schemas import get_schema
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
from kpdiff.engine.data import Datasets, build_model, model_config, prepare_datasets
from kpdiff.engine.distributed import (
    DistInfo,
    all_gather_objects,
    amp_dtype,
    barrier,
    init_distributed,
    mean,
)
from kpdiff.engine.evaluate import ClipPoseModel, evaluate_model
from kpdiff.engine.sinks import MetricSink, check_sinks, open_sinks
from kpdiff.errors import KpdiffInputError
from kpdiff.io import load_safetensors, state_dict_diff, write_text_atomic

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
    return amp_dtype(config.runtime.amp, device)


@dataclass
class _Run:
    """What the steps of one :func:`train` call share (built by :func:`_setup`)."""

    config: ExperimentConfig
    record: ExperimentConfig  # what experiment.yaml says ran (see _experiment_record)
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
    log: _MetricsLog = field(init=False)  # set by _open_outputs
    bar: _Progress = field(init=False)
    window_start: float = 0.0  # samples/s: since this time, this many samples
    window_samples: int = 0


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
            ``datasets`` is given. Default: ``build_model(config)``, whose initial weights
            ``runtime.seed`` draws. A model passed in is trained with the weights it has
            (random or pretrained: ``runtime.seed`` does not re-initialise it; it still seeds
            data order, augmentation and the diffusion draws) and is trained in place: two runs
            with the same config from models in the same state (``copy.deepcopy`` one before
            training it) give the same losses, two runs of one model object do not (the second
            starts from the weights the first ended with). ``experiment.yaml`` records its class
            and config (``model.custom``).
        resume: continue from ``output_dir/checkpoints/latest`` (error when there is none).
        stop_after: stop (without a final checkpoint) after this global step, as a kill would.
            For tests of resuming. Default: run to the end.
        datasets: prepared datasets to use instead of building them from ``config.data``;
            ``experiment.yaml`` records their settings (``data.custom``) when they are not the
            ones ``config`` describes.

    Returns:
        A :class:`TrainResult` (on every rank; files are written by rank 0 only).
    """
    run = _setup(config, model, datasets)
    if resume:
        _resume(run)
    else:
        torch.manual_seed(config.runtime.seed + 7919 * run.info.rank)  # per-rank augmentation
    _open_outputs(run, resumed=resume)
    while run.counters["step"] < run.total:
        if _run_epoch(run, stop_after):  # stopped after step stop_after, as a kill would
            return _finish(run, stopped=True)
        if _validation_due(run):
            _validate(run)
        _save_checkpoint(run)
    return _finish(run, stopped=False)


def _setup(
    config: ExperimentConfig, model: TrainablePoseModel | None, datasets: Datasets | None
) -> _Run:
    """Check the config, start the processes, seed, and build data, model and optimizer."""
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
    torch.manual_seed(config.runtime.seed)  # a model built here: the same weights on every rank
    given_datasets = datasets
    datasets = datasets or prepare_datasets(config, info)
    trained = _prepare_model(config, model, datasets, info)
    loss_module: nn.Module = _LossModule(trained)
    if info.distributed:
        loss_module = DistributedDataParallel(
            loss_module, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    opt_cfg = config.optim
    params = [p for p in trained.parameters() if p.requires_grad]
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
    amp = _autocast_dtype(config, info.device)
    return _Run(
        config=config, record=_experiment_record(config, model, given_datasets), info=info,
        out=out, datasets=datasets, model=trained, loss_module=loss_module, params=params,
        optimizer=optimizer, scheduler=scheduler, per_step=per_step, per_epoch=per_epoch,
        total=total, ema=_ema_model(trained, opt_cfg.ema_decay), amp=amp,
        # fp16 gradients underflow without loss scaling (bf16 and fp32 need none).
        scaler=torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16),
        start_time=start_time,
    )  # fmt: skip


def _prepare_model(
    config: ExperimentConfig, model: TrainablePoseModel | None, datasets: Datasets, info: DistInfo
) -> nn.Module:
    """The model to train (``build_model(config)`` when none is given), on the device."""
    if model is None:
        model = build_model(config, num_keypoints=datasets.schema.num_keypoints)
    elif not isinstance(model, nn.Module) or not isinstance(model, TrainablePoseModel):
        raise KpdiffInputError(
            f"model: expected an nn.Module with condition, predict and loss "
            f"(kpdiff.engine.TrainablePoseModel), got {type(model).__name__}"
        )
    module = model.to(info.device)
    if config.model.compile_decoder:
        if not isinstance(getattr(module, "decoder", None), nn.Module):
            raise KpdiffInputError(
                f"model.compile_decoder: {type(module).__name__} has no .decoder module to compile"
            )
        # In place: the state dict keeps its names (torch.compile's wrapper would prefix them
        # with "_orig_mod.", and checkpoints would not load into an uncompiled DiffPose).
        module.decoder.compile()
    return module


def _resume(run: _Run) -> None:
    """Continue from ``checkpoints/latest``: weights, optimizer, lr schedule, fp16 scaler, weight
    average, counters and this rank's random streams."""
    ckpt = latest_checkpoint(run.out)
    if ckpt is None:
        raise KpdiffInputError(f"--resume: no checkpoint in {run.out / 'checkpoints'}")
    _load_weights(run.model, ckpt)
    state = load_training_state(ckpt)  # reads JSON and safetensors: never unpickles
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        if run.ema is not None:
            if "ema" not in state:
                raise KeyError("ema (the checkpoint has no weight average)")
            run.ema.load_state_dict(state["ema"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:300]
        raise KpdiffInputError(
            f"{ckpt}: its optimizer state does not fit this config ({detail}); was it "
            f"written by another experiment?"
        ) from None
    run.counters = dict(state["counters"])
    # Every rank continues its own random streams (augmentation, t, noise).
    per_rank, info = state["rng_per_rank"], run.info
    try:
        if len(per_rank) == info.world_size:
            set_rng_state(per_rank[info.rank])
        else:  # another number of processes: no exact replay, but distinct streams per rank
            set_rng_state(per_rank[0])
            torch.manual_seed(
                run.config.runtime.seed + 7919 * info.rank + 104_729 * run.counters["step"]
            )
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:200]
        raise KpdiffInputError(
            f"{ckpt}: damaged RNG state in its training state ({detail})"
        ) from None


def _open_outputs(run: _Run, *, resumed: bool) -> None:
    """The output folder, ``experiment.yaml``, the metrics log and sinks, the progress bar."""
    out, info = run.out, run.info
    if info.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KpdiffInputError(
                f"runtime.output_dir: cannot create {out} ({err.strerror or err})"
            ) from None
        save_config(run.record, out / "experiment.yaml")
    run.log = _MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    # A fresh run starts a new log; a resumed one drops what was logged after its checkpoint.
    run.log.start(keep_until=run.counters["step"] if resumed else None)
    if info.is_main:  # TensorBoard / W&B when runtime enables them
        run.log.sinks = open_sinks(
            run.config, resume_step=run.counters["step"] if resumed else None
        )
    run.bar = _Progress(run.total, enabled=info.is_main and run.config.runtime.progress)
    run.bar.update(run.counters["step"])
    run.window_start, run.window_samples = time.perf_counter(), 0


def _run_epoch(run: _Run, stop_after: int | None) -> bool:
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
        _train_step(run, batch, epoch)
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


def _train_step(run: _Run, batch: dict[str, torch.Tensor], epoch: int) -> None:
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


def _validation_due(run: _Run) -> bool:
    """Validate now: at the end of the run, and after every ``eval.every``-th epoch."""
    counters, every = run.counters, run.config.eval.every
    finished = counters["step"] >= run.total
    return run.datasets.val is not None and (
        finished
        or (every > 0 and counters["epoch"] % every == 0 and counters["batch_in_epoch"] == 0)
    )


def _validate(run: _Run) -> None:
    """Mean AP of the (averaged) model on the validation set; ``best/`` when it improved."""
    config, counters, model = run.config, run.counters, _averaged(run.model, run.ema)
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


def _save_checkpoint(run: _Run) -> None:
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


def _finish(run: _Run, *, stopped: bool) -> TrainResult:
    """Close the bar, the log and its sinks; at the end of a run without validation, save the
    final model as ``best/``. Returns what this call did."""
    run.bar.close()
    run.log.close()
    if not stopped and run.info.is_main and run.datasets.val is None:
        save_model(_averaged(run.model, run.ema), run.out / "best")  # no validation: the last
    counters = run.counters
    return TrainResult(
        run.out, run.losses, counters["best"], counters["step"], _since(run.start_time)
    )


def _experiment_record(
    config: ExperimentConfig, model: nn.Module | None, datasets: Datasets | None
) -> ExperimentConfig:
    """``config`` as it ran, for ``experiment.yaml``: with ``model.custom`` describing a model
    given to :func:`train` and ``data.custom`` given datasets that ``config`` does not describe
    (both ``None`` otherwise, also when ``config`` held other values)."""
    model_record = None if model is None else _model_record(model)
    data_record = None
    if datasets is not None and not _datasets_as_configured(config, datasets):
        data_record = {
            "note": "the datasets passed to train(datasets=...): the settings above that build "
            "datasets (root, synthetic_*, splits, val_boxes, min_box_score, edge, augment) did "
            "not build them",
            "schema": datasets.schema.name,
            "train": _dataset_record(datasets.train),
            "val": None if datasets.val is None else _dataset_record(datasets.val),
        }
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, custom=model_record),
        data=dataclasses.replace(config.data, custom=_plain(data_record)),
    )


def _model_record(model: nn.Module) -> dict[str, Any]:
    """Class, own config (``model.config.to_dict()``, when it has one) and size of ``model``."""
    own = getattr(model, "config", None)
    to_dict = getattr(own, "to_dict", None)
    record = {
        "note": "the model passed to train(model=...), trained from the weights it had: preset, "
        "overrides and pretrained_backbone did not build it",
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": to_dict() if callable(to_dict) else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return _plain(record)


def _dataset_record(dataset: Any) -> dict[str, Any]:
    """Class, clips and (a ``TopDownClipDataset``) the settings of one dataset."""
    record: dict[str, Any] = {"class": f"{type(dataset).__module__}.{type(dataset).__qualname__}"}
    record["clips"] = len(dataset) if hasattr(dataset, "__len__") else None
    if isinstance(dataset, TopDownClipDataset):
        codec = dataset.codec
        record.update(
            schema=dataset.schema.name,
            clip=dataclasses.asdict(dataset.config),
            augment=None if dataset.augment is None else dataclasses.asdict(dataset.augment),
            targets={
                "heatmap_size": list(codec.heatmap_size),
                "stride": codec.stride,
                "sigma": codec.sigma,
            },
            frames=_frames_folder(dataset),
        )
    return record


def _datasets_as_configured(config: ExperimentConfig, datasets: Datasets) -> bool:
    """Whether ``datasets`` are what ``prepare_datasets(config)`` reads: clips of the schema, clip
    geometry, augmentation and targets of ``config`` from frames under ``data.root``."""
    train, val = datasets.train, datasets.val
    if not isinstance(train, TopDownClipDataset) or not isinstance(val, TopDownClipDataset):
        return False
    model = model_config(config)
    clip = model.data_config(edge=config.data.edge, min_box_score=config.data.min_box_score)
    codec = model.codec()
    schema = get_schema(config.data.schema).name
    root = os.path.abspath(config.data.root)
    for dataset, augment in ((train, config.data.augment), (val, None)):
        folder = _frames_folder(dataset)
        if (
            dataset.schema.name != schema
            or dataset.config != clip
            or dataset.augment != augment
            or tuple(dataset.codec.heatmap_size) != tuple(codec.heatmap_size)
            or dataset.codec.input_size != codec.input_size
            or dataset.codec.sigma != codec.sigma
            or (folder is not None and os.path.commonpath([folder, root]) != root)
        ):
            return False
    return datasets.schema.name == schema


def _frames_folder(dataset: TopDownClipDataset) -> str | None:
    """The folder (absolute) that holds the frames of every clip, ``None`` without clips."""
    firsts = {id(s.frame_paths): s.frame_paths[0] for s in dataset.samples if s.frame_paths}
    if not firsts:
        return None
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in firsts.values()])


def _plain(value: Any) -> Any:
    """``value`` in plain JSON types (tuples as lists; anything else as its ``str``)."""
    return json.loads(json.dumps(value, default=str))


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
    diff = state_dict_diff(own, state)
    problems = [f"missing {k}" for k in diff["missing"]]
    problems += [f"unexpected {k}" for k in diff["unexpected"]]
    problems += [
        f"{k} is {list(state[k].shape)} in the checkpoint, {list(own[k].shape)} here"
        for k in diff["shape"]
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
