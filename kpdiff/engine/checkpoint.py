"""Training checkpoints: model weights and training state in files that cannot run code.

Layout of a run's output folder::

    checkpoints/step-000120/   model.safetensors (+ config.json for DiffPose; save_model),
                               training_state.json + training_state.safetensors (optimizer,
                               lr schedule, counters, every rank's RNG states, fp16 scaler,
                               weight average),
                               experiment.yaml
    checkpoints/latest         the name of the newest complete checkpoint folder
    best/                      the model with the best validation Mean AP (save_model)

The training state is plain JSON (numbers, strings, lists, tagged tuples and integer-keyed
dicts, see :func:`encode_state`) whose tensors are references into the safetensors file:
reading it never unpickles anything, so a run folder from someone else cannot run code on
``--resume``. Checkpoints of older kpdiff versions (``training_state.pt``, a pickle) are refused,
never unpickled.

A checkpoint folder is written under a temporary name and renamed when complete, and ``latest``
is replaced atomically after it: a run killed at any moment leaves the previous checkpoint
intact and ``latest`` pointing at a complete folder. What a kill leaves behind (a half-written
``.tmp-*`` folder, ``.latest.*.tmp``, a half-written ``best/``) is removed by
:func:`remove_leftovers`, which :func:`~kpdiff.engine.train` calls when it starts.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from collections import Counter
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
from kpdiff.hub import WEIGHTS_NAME
from kpdiff.io import atomic_path, current_umask, load_safetensors, remove_stale_temp_files

__all__ = [
    "LEGACY_STATE_NAME",
    "STATE_JSON_NAME",
    "STATE_TENSORS_NAME",
    "decode_state",
    "encode_state",
    "get_rng_state",
    "latest_checkpoint",
    "load_training_state",
    "remove_leftovers",
    "save_checkpoint",
    "save_model",
]

STATE_JSON_NAME = "training_state.json"
STATE_TENSORS_NAME = "training_state.safetensors"
LEGACY_STATE_NAME = "training_state.pt"  # a pickle: refused, never loaded
_FORMAT, _VERSION = "kpdiff-training-state", 1
_TAGS = ("__tensor__", "__tuple__", "__dict__", "__counter__", "__float__", "__ndarray__")
_NDARRAY_KINDS = "biu"  # numpy arrays stored as JSON lists of ints (NumPy's RNG key)


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


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a state (``state_dict``s, RNG states, counters) into JSON and tensors.

    Returns ``(document, tensors)``: ``document`` holds only JSON values, ``tensors`` the
    tensors it refers to by name (CPU, contiguous; for a safetensors file). Besides JSON's own
    types, tensors (``{"__tensor__": name}``), tuples (``{"__tuple__": [...]}``), dicts with
    keys that are not plain strings (``{"__dict__": [[key, value], ...]}``), ``Counter`` objects,
    non-finite floats (``{"__float__": "nan"}``) and integer NumPy arrays (NumPy's RNG key) are
    kept exactly: :func:`decode_state` returns an equal object, bit for bit.

    Raises:
        TypeError: for any other type (nothing is pickled instead).
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def tensor_ref(t: torch.Tensor, path: str) -> dict[str, str]:
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        # safetensors refuses tensors that share memory: give each its own
        if storage.data_ptr() in storages or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        if t.numel():
            storages.add(t.untyped_storage().data_ptr())
        name, n = path or "tensor", 1
        while name in tensors:
            n += 1
            name = f"{path}#{n}"
        tensors[name] = t
        return {"__tensor__": name}

    def enc(x: Any, path: str) -> Any:
        if x is None or isinstance(x, bool | int | str):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"__float__": repr(x)}
        if isinstance(x, torch.Tensor):
            return tensor_ref(x, path)
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in _NDARRAY_KINDS:
                raise TypeError(f"{path}: cannot store a NumPy array of {x.dtype}")
            return {"__ndarray__": [str(x.dtype), list(x.shape), x.ravel().tolist()]}
        if isinstance(x, np.generic):
            return enc(x.item(), path)
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, Counter):
            return {"__counter__": [[enc(k, path), enc(v, path)] for k, v in x.items()]}
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{path}.{k}" if path else k) for k, v in x.items()}
            return {"__dict__": [[enc(k, path), enc(v, f"{path}.{k}")] for k, v in x.items()]}
        raise TypeError(f"{path}: cannot store a {type(x).__name__} in a training state")

    return enc(obj, ""), tensors


def decode_state(document: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`.

    Raises:
        ValueError: when ``document`` is not what :func:`encode_state` writes (an unknown tag,
            a tensor name that is not in ``tensors``, a malformed tuple or dict).
    """

    def key(x: Any) -> Any:
        k = dec(x)
        if isinstance(k, list | dict):
            raise ValueError(f"a dict key must be a number, string or tuple, got {x!r:.60}")
        return k

    def pairs(x: Any) -> list[tuple[Any, Any]]:
        if not isinstance(x, list) or not all(isinstance(p, list) and len(p) == 2 for p in x):
            raise ValueError(f"expected a list of [key, value] pairs, got {x!r:.60}")
        return [(key(k), dec(v)) for k, v in x]

    def dec(x: Any) -> Any:
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            raise ValueError(f"unexpected {type(x).__name__}")
        if len(x) != 1 or next(iter(x)) not in _TAGS:
            return {k: dec(v) for k, v in x.items()}
        ((tag, value),) = x.items()
        if tag == "__tensor__":
            if not isinstance(value, str) or value not in tensors:
                raise ValueError(f"refers to tensor {value!r:.60}, which the tensor file lacks")
            return tensors[value]
        if tag == "__tuple__":
            if not isinstance(value, list):
                raise ValueError(f"a tuple must be a list, got {value!r:.60}")
            return tuple(dec(v) for v in value)
        if tag == "__dict__":
            return dict(pairs(value))
        if tag == "__counter__":
            return Counter(dict(pairs(value)))
        if tag == "__float__":
            if value not in ("nan", "inf", "-inf"):
                raise ValueError(f"a non-finite float must be nan, inf or -inf, got {value!r:.60}")
            return float(value)
        # __ndarray__
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
            raise ValueError(f"an array must be [dtype, shape, values], got {value!r:.60}")
        dtype, shape, values = value
        try:
            if np.dtype(dtype).kind not in _NDARRAY_KINDS:
                raise TypeError(dtype)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise TypeError("values")
            return np.asarray(values, dtype=dtype).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"not a valid integer array: {value!r:.60}") from None

    try:
        return dec(document)
    except RecursionError:
        raise ValueError("nested too deeply") from None


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
    _remove_stale_checkpoint_files(root)
    final = root / f"step-{int(counters['step']):07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_model(model, tmp)
        state: dict[str, Any] = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "counters": dict(counters),
            "rng_per_rank": rng_states or [get_rng_state()],  # rank r resumes with entry r
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if ema is not None:
            state["ema"] = ema.state_dict()
        _write_training_state(state, tmp)
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


def _write_training_state(state: dict[str, Any], folder: Path) -> None:
    from safetensors.torch import save_file

    document, tensors = encode_state(state)
    with atomic_path(folder / STATE_TENSORS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT})
    header = {"format": _FORMAT, "version": _VERSION, "tensors": STATE_TENSORS_NAME}
    text = json.dumps({**header, "state": document}, allow_nan=False, separators=(",", ":"))
    write_text_atomic(folder / STATE_JSON_NAME, text + "\n")


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """``model.save_pretrained(directory)`` when the model has it (DiffPose: ``config.json`` +
    ``model.safetensors``), else its state dict as ``directory/model.safetensors``; atomic.

    A ``directory`` that does not exist yet is written under a temporary name and renamed when
    complete (a kill during the first write leaves no empty or half-written folder); the files
    of an existing one are replaced one by one, each atomically.
    """
    directory = Path(directory)
    if directory.is_dir():
        _write_model_files(model, directory)
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        _write_model_files(model, tmp)
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes a private folder
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _write_model_files(model: nn.Module, directory: Path) -> None:
    save_pretrained = getattr(model, "save_pretrained", None)
    if callable(save_pretrained):
        save_pretrained(directory)
        return
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))


def _remove_stale_checkpoint_files(root: Path) -> None:
    """Half-written checkpoint folders and ``.latest.*.tmp`` files of a killed run."""
    for stale in root.glob(".tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    remove_stale_temp_files(root)


def remove_leftovers(output_dir: str | Path, model_dirs: tuple[str, ...] = ("best",)) -> None:
    """Remove what a run killed while writing left in ``output_dir``.

    That is the temporary files of atomic writes (``.metrics.*.tmp.jsonl``, ``.latest.*.tmp``,
    …), half-written checkpoint folders (``checkpoints/.tmp-*``), half-written first versions
    of the ``model_dirs`` (``.best.tmp-*``) and model folders left empty. Complete checkpoints,
    ``latest`` and complete model folders are kept. Call it only while no other process writes
    into the run (:func:`~kpdiff.engine.train` does, on rank 0, when it starts).
    """
    out = Path(output_dir)
    if not out.is_dir():
        return
    remove_stale_temp_files(out)
    root = out / "checkpoints"
    if root.is_dir():
        _remove_stale_checkpoint_files(root)
    for name in model_dirs:
        for stale in out.glob(f".{name}.tmp-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            remove_stale_temp_files(folder)
            if not any(folder.iterdir()):
                folder.rmdir()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or ``None`` when there is none.

    Raises:
        KpdiffInputError: when ``checkpoints/latest`` points at an incomplete folder, or at a
            checkpoint of an older kpdiff whose training state is a pickle (never loaded: a
            pickle can run code).
    """
    pointer = Path(output_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise KpdiffInputError(f"{pointer}: expected the name of a checkpoint folder (step-…)")
    path = pointer.parent / name
    if not all((path / f).is_file() for f in (STATE_JSON_NAME, STATE_TENSORS_NAME)):
        _refuse_legacy(path)
        raise KpdiffInputError(f"{pointer}: points at {path}, which is not a complete checkpoint")
    return path


def _refuse_legacy(folder: Path) -> None:
    legacy = folder / LEGACY_STATE_NAME
    if legacy.exists():
        raise KpdiffInputError(
            f"{legacy}: a training state in the old pickle format, which kpdiff no longer "
            f"loads because unpickling can run arbitrary code; resuming needs "
            f"{STATE_JSON_NAME} + {STATE_TENSORS_NAME} (written by this kpdiff version): start a "
            f"new run, or take only its weights with DiffPose.from_pretrained({str(folder)!r})"
        )


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read the training state of a checkpoint folder (optimizer, scheduler, counters, RNG).

    Reads ``training_state.json`` and ``training_state.safetensors`` only: nothing is unpickled.
    Returns ``{"optimizer", "scheduler", "counters", "rng_per_rank", "rng"}`` (``rng``: rank
    0's) and, when saved, ``"scaler"`` and ``"ema"``; tensors on the CPU.

    Raises:
        KpdiffInputError: naming the file, when it is missing, damaged (truncated, not UTF-8,
            not JSON, not what :func:`save_checkpoint` writes), or the folder holds only an old
            ``training_state.pt`` (refused, never loaded).
    """
    folder = Path(path)
    file = folder / STATE_JSON_NAME
    if not file.is_file():
        _refuse_legacy(folder)
        raise KpdiffInputError(f"{file}: not found; is {path} a checkpoint folder?")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        detail = " ".join(str(err).split())[:200]
        raise KpdiffInputError(
            f"{file}: damaged training state, not valid JSON ({detail})"
        ) from None
    if not (
        isinstance(document, dict)
        and document.get("format") == _FORMAT
        and isinstance(document.get("state"), dict)
    ):
        raise KpdiffInputError(
            f"{file}: damaged training state (expected a JSON object with format {_FORMAT!r} "
            f"and a state)"
        )
    if document.get("version") != _VERSION:
        raise KpdiffInputError(
            f"{file}: training state version {document.get('version')!r}; this kpdiff reads "
            f"version {_VERSION}"
        )
    tensors = load_safetensors(folder / STATE_TENSORS_NAME)
    try:
        state = decode_state(document["state"], tensors)
        _check_training_state(state)
    except ValueError as err:
        raise KpdiffInputError(f"{file}: damaged training state ({err})") from None
    state["rng"] = state["rng_per_rank"][0]
    return state


def _check_training_state(state: dict[str, Any]) -> None:
    """The structure :func:`train` relies on (values are checked where they are loaded)."""
    for name in ("optimizer", "scheduler", "counters"):
        if not isinstance(state.get(name), dict):
            raise ValueError(f"{name}: expected an object")
    counters = state["counters"]
    for name in ("step", "epoch", "batch_in_epoch"):
        value = counters.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"counters.{name}: expected an integer >= 0, got {value!r:.60}")
    best = counters.get("best")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int | float)):
        raise ValueError(f"counters.best: expected a number or null, got {best!r:.60}")
    ranks = state.get("rng_per_rank")
    if not isinstance(ranks, list) or not ranks:
        raise ValueError("rng_per_rank: expected a list of RNG states, one per rank")
    for rank, rng in enumerate(ranks):
        if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
            raise ValueError(f"rng_per_rank.{rank}: expected python, numpy and torch states")
        if not isinstance(rng.get("python"), tuple) or not isinstance(rng.get("numpy"), tuple):
            raise ValueError(f"rng_per_rank.{rank}: expected python, numpy and torch states")
    for name in ("scaler", "ema"):
        if name in state and not isinstance(state[name], dict):
            raise ValueError(f"{name}: expected an object")
