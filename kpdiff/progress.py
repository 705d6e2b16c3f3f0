"""Progress bars (tqdm) for the long jobs (evaluation, prediction, dataset building): on a
terminal by default, off in logs and pipes."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool | None = None,
    scale: int = 1,
) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr counting ``unit``s per second.

    Args:
        iterable: what to iterate.
        total: how many units in all (for the bar's length), or ``None``.
        desc: the bar's label. unit: what it counts. Default ``"it"``.
        enabled: ``True`` / ``False``; ``None`` (default): only when stderr is a terminal, so
            logs and pipes get no bar.
        scale: units per item of ``iterable`` (e.g. the clips of a batch); an item may also be
            anything with a ``len()`` when ``scale`` is ``0``. Default ``1``.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0) as bar:
        for item in iterable:
            yield item
            bar.update(scale or _size(item))


def _size(item: Any) -> int:
    clip = item.get("clip") if isinstance(item, dict) else None
    return len(clip) if clip is not None else len(item)
