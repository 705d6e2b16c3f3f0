"""Atomic file writes (a reader never sees a half-written file, a crash leaves the old one),
safetensors reading, and the comparison of a state dict with the weights read for it.

Every file kpdiff writes (configs, checkpoints, weights, predictions, plots, videos) goes
through :func:`atomic_path`: the content is written to a temporary file in the target's folder
and renamed over the target only when complete. A process killed while writing leaves the
temporary file (``.NAME.<12 hex digits>.tmp.SUFFIX``) behind; :func:`remove_stale_temp_files`
removes them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are read
    import torch

__all__ = [
    "atomic_path",
    "current_umask",
    "load_safetensors",
    "remove_stale_temp_files",
    "state_dict_diff",
    "write_json_atomic",
    "write_text_atomic",
]

# The temporary names of atomic_path: ".{stem}.{12 hex digits}.tmp{suffix}".
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp(\.[^.]*)?")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    The temporary name keeps ``path``'s suffix (writers that choose a format by suffix work),
    parent folders are created, the file's mode follows the umask (``0o666 & ~umask``, also
    when the writer created it private, as safetensors does), and on an exception the temporary
    file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:
        ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"
    try:
        yield tmp
        if stat.S_ISREG(os.lstat(tmp).st_mode):
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as JSON (no NaN/inf) to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(obj, allow_nan=False))


def current_umask() -> int:
    """The process' umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` (not below it) when a
    process was killed while writing; returns what was removed. Call it only when no other
    process writes into ``folder``."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def load_safetensors(
    path: str | os.PathLike[str], *, device: str = "cpu", finite: bool = False
) -> dict[str, torch.Tensor]:
    """Read a safetensors file (which cannot run code) into ``{name: tensor}``.

    Args:
        path: the file.
        device: where the tensors go. Default ``"cpu"``.
        finite: also reject floating-point tensors holding NaN or inf. Default ``False``.

    Raises:
        KpdiffInputError: naming the file, when it is missing, not a file, empty, truncated or
            not safetensors (instead of safetensors' ``SafetensorError``), or with ``finite``,
            when a tensor holds NaN/inf.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kpdiff.errors import KpdiffInputError

    path = Path(path)
    if not path.is_file():
        raise KpdiffInputError(f"{path}: not found (expected a safetensors file)")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        detail = " ".join(str(err).split())
        raise KpdiffInputError(
            f"{path}: not a readable safetensors file (empty, truncated or damaged: {detail})"
        ) from None
    if finite:
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise KpdiffInputError(
                    f"{path}: tensor {name} holds {bad} NaN/inf values (a damaged checkpoint, "
                    f"or one from a run that diverged)"
                )
    return tensors


def state_dict_diff(own: Mapping[str, Any], loaded: Mapping[str, Any]) -> dict[str, list[str]]:
    """Which names of ``loaded`` (weights read from a file) do not fit ``own`` (a model's
    ``state_dict()``).

    Args:
        own: the state dict the weights are for.
        loaded: the weights read (tensors, or anything with a ``.shape``).

    Returns:
        ``{"missing": …, "unexpected": …, "shape": …}``, each a sorted list of names: in
        ``own`` but not in ``loaded``; in ``loaded`` but not in ``own``; in both with another
        shape. All three empty: ``loaded`` fits (``load_state_dict(loaded)`` with ``strict``
        loads it). The callers word their own errors (and show the two shapes of a name).
    """
    return {
        "missing": sorted(set(own) - set(loaded)),
        "unexpected": sorted(set(loaded) - set(own)),
        "shape": sorted(
            k for k in set(own) & set(loaded) if tuple(own[k].shape) != tuple(loaded[k].shape)
        ),
    }
