"""Training: AdamW + milestone schedule, DDP through torchrun, checkpoints and exact resume.

``train(config)`` is what ``kpdiff train CONFIG`` runs. Exact resume: data order comes from a
permutation seeded by ``(seed, epoch)``, every random draw (augmentation, t, ε) comes from RNGs
whose state is checkpointed (every rank's), so resuming from a checkpoint replays the same batches
and losses, bit for bit on CPU (with the same number of processes and ``data.workers``: worker
processes seed themselves from the loader's own generator, seeded by ``(seed, rank, epoch)``).
Validation draws from generators of its own: validating or not leaves the training draws as
they are.

The steps ``train`` runs are in :mod:`kpdiff.engine.train_steps` (epochs, validation,
checkpoints), the lr schedule and weight average in :mod:`kpdiff.engine.optim`, the
``metrics.jsonl`` log and progress bar in :mod:`kpdiff.engine.train_log`, what
``experiment.yaml`` records in :mod:`kpdiff.engine.run_record`; this module sets a run up,
resumes it and finishes it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kpdiff.engine.checkpoint import (
    latest_checkpoint,
    load_training_state,
    remove_leftovers,
    save_model,
    set_rng_state,
)
from kpdiff.engine.config import ExperimentConfig, check_config, save_config
from kpdiff.engine.data import Datasets, build_model, prepare_datasets
from kpdiff.engine.distributed import DistInfo, amp_dtype, init_distributed
from kpdiff.engine.evaluate import ClipPoseModel
from kpdiff.engine.optim import averaged, ema_model, lr_schedule
from kpdiff.engine.run_record import experiment_record
from kpdiff.engine.sinks import check_sinks, open_sinks
from kpdiff.engine.train_log import MetricsLog, Progress
from kpdiff.engine.train_steps import (
    TrainRun,
    run_epoch,
    save_run_checkpoint,
    validate,
    validation_due,
)
from kpdiff.errors import KpdiffInputError
from kpdiff.hub import CONFIG_NAME, WEIGHTS_NAME
from kpdiff.io import load_safetensors, state_dict_diff

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
        if run_epoch(run, stop_after):  # stopped after step stop_after, as a kill would
            return _finish(run, stopped=True)
        if validation_due(run):
            validate(run)
        save_run_checkpoint(run)
    return _finish(run, stopped=False)


def _setup(
    config: ExperimentConfig, model: TrainablePoseModel | None, datasets: Datasets | None
) -> TrainRun:
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
    scheduler, per_step = lr_schedule(optimizer, opt_cfg, total, per_epoch)
    amp = amp_dtype(config.runtime.amp, info.device)
    return TrainRun(
        config=config, record=experiment_record(config, model, given_datasets), info=info,
        out=out, datasets=datasets, model=trained, loss_module=loss_module, params=params,
        optimizer=optimizer, scheduler=scheduler, per_step=per_step, per_epoch=per_epoch,
        total=total, ema=ema_model(trained, opt_cfg.ema_decay), amp=amp,
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


def _resume(run: TrainRun) -> None:
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


def _open_outputs(run: TrainRun, *, resumed: bool) -> None:
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
    run.log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    # A fresh run starts a new log; a resumed one drops what was logged after its checkpoint.
    run.log.start(keep_until=run.counters["step"] if resumed else None)
    if info.is_main:  # TensorBoard / W&B when runtime enables them
        run.log.sinks = open_sinks(
            run.config, resume_step=run.counters["step"] if resumed else None
        )
    run.bar = Progress(run.total, enabled=info.is_main and run.config.runtime.progress)
    run.bar.update(run.counters["step"])
    run.window_start, run.window_samples = time.perf_counter(), 0


def _finish(run: TrainRun, *, stopped: bool) -> TrainResult:
    """Close the bar, the log and its sinks; at the end of a run without validation, save the
    final model as ``best/``. Returns what this call did."""
    run.bar.close()
    run.log.close()
    if not stopped and run.info.is_main and run.datasets.val is None:
        save_model(averaged(run.model, run.ema), run.out / "best")  # no validation: the last
    counters = run.counters
    return TrainResult(
        run.out, run.losses, counters["best"], counters["step"], _since(run.start_time)
    )


def _load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's weights; weights of another model are a one-line error."""
    state = load_safetensors(checkpoint / WEIGHTS_NAME, finite=True)
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
        saved = json.loads((checkpoint / CONFIG_NAME).read_text(encoding="utf-8"))
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
