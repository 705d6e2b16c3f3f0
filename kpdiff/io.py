"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.

Every file kpdiff writes (configs, checkpoints, weights, predictions, plots, videos) goes
through :func:`atomic_path`: the content is written to a temporary file in the target's folder
and renamed over the target only when complete.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "current_umask", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    The temporary name keeps ``path``'s suffix (writers that choose a format by suffix work),
    parent folders are created, the file's mode follows the umask, and on an exception the
    temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:
        ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"
    try:
        yield tmp
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
