"""Training checkpoints: model weights (safetensors), optimizer/scheduler/RNG state, atomically.

Layout of a run's output folder::

    checkpoints/step-000120/   model.safetensors (+ config.json for DiffPose; save_model),
                               training_state.pt (optimizer, lr schedule, counters, every
                               rank's RNG states),
                               experiment.yaml
    checkpoints/latest         the name of the newest complete checkpoint folder
    best/                      the model with the best validation Mean AP (save_model)

A checkpoint folder is written under a temporary name and renamed when complete, and ``latest``
is replaced atomically after it: a run killed at any moment leaves the previous checkpoint
intact and ``latest`` pointing at a complete folder.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpdiff.engine.config import (
    ExperimentConfig,
    save_config,
    write_text_atomic,
)
from kpdiff.errors import KpdiffInputError
from kpdiff.io import atomic_path, current_umask

__all__ = [
    "get_rng_state",
    "latest_checkpoint",
    "load_training_state",
    "save_checkpoint",
    "save_model",
]


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: ExperimentConfig,
    counters: dict[str, Any],
    keep: int = 2,
    rng_states: list[dict[str, Any]] | None = None,
    scaler: Any | None = None,
    ema: nn.Module | None = None,
) -> Path:
    """Write a complete checkpoint and point ``checkpoints/latest`` at it.

    Args:
        output_dir: the run's output folder.
        model: the (unwrapped) model, saved by :func:`save_model`.
        optimizer / scheduler: their ``state_dict`` is saved.
        config: the experiment, saved next to the weights.
        counters: ``{"step": …, "epoch": …, "batch_in_epoch": …, "best": …}``.
        keep: how many checkpoint folders to keep (oldest removed first). Default ``2``.
        rng_states: every rank's :func:`get_rng_state`, in rank order (a distributed run);
            default: this process' only.
        scaler: the fp16 ``GradScaler``, whose state is saved too, or ``None``.
        ema: the weight average (``torch.optim.swa_utils.AveragedModel``), or ``None``.

    Returns:
        The checkpoint folder.
    """
    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # half-written by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{int(counters['step']):07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_model(model, tmp)
        rng_states = rng_states or [get_rng_state()]
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "counters": dict(counters),
            "rng": rng_states[0],
            "rng_per_rank": rng_states,  # rank r resumes with rng_per_rank[r]
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if ema is not None:
            state["ema"] = ema.state_dict()
        torch.save(state, tmp / "training_state.pt")
        save_config(config, tmp / "experiment.yaml")
        mask = current_umask()  # mkdtemp / mkstemp make private files; honour the umask
        tmp.chmod(0o777 & ~mask)
        for file in tmp.iterdir():
            file.chmod(0o666 & ~mask)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / "latest", final.name + "\n")
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """``model.save_pretrained(directory)`` when the model has it (DiffPose: ``config.json`` +
    ``model.safetensors``), else its state dict as ``directory/model.safetensors``; atomic."""
    directory = Path(directory)
    save_pretrained = getattr(model, "save_pretrained", None)
    if callable(save_pretrained):
        save_pretrained(directory)
        return directory
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    return directory


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or ``None`` when there is none."""
    pointer = Path(output_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "training_state.pt").is_file():
        raise KpdiffInputError(f"{pointer}: points at {path}, which is not a complete checkpoint")
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read ``training_state.pt`` of a checkpoint folder (optimizer, scheduler, counters, RNG)."""
    file = Path(path) / "training_state.pt"
    if not file.is_file():
        raise KpdiffInputError(f"{file}: not found; is {path} a checkpoint folder?")
    return torch.load(file, map_location="cpu", weights_only=False)
