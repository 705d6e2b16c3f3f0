"""JSON loading and the field checks shared by the PoseTrack readers (:mod:`kpdiff.data.posetrack`).

Each check raises :class:`~kpdiff.errors.KpdiffInputError` naming the file, the record and the
field.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kpdiff.errors import KpdiffInputError

__all__ = ["MISSING_SCORE"]

MISSING_SCORE = -9999.0
"""Score given to a predicted joint whose file carries no score (poseval's ``MIN_SCORE``)."""

PathLike = str | os.PathLike


def fail(path: PathLike, where: str, field: str, msg: str) -> KpdiffInputError:
    """The error (for the caller to raise) naming the file, the record ``where`` and the field."""
    return KpdiffInputError(f"{path}: {where}: field {field!r}: {msg}")


def load_json(path: PathLike) -> Any:
    """The parsed JSON file (orjson: strict JSON, UTF-8, no NaN, integers within 64 bits)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise KpdiffInputError(f"{path}: no such file") from None
    except OSError as e:
        raise KpdiffInputError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise KpdiffInputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            return _parse_file(f, info.st_size)
    except orjson.JSONDecodeError as e:
        raise KpdiffInputError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise KpdiffInputError(f"{path}: cannot be read ({e.strerror})") from None


def _parse_file(f: Any, size: int) -> Any:
    """``orjson.loads`` of the open file ``f``, parsed from its pages where it can be mapped (a
    fresh copy of each large file costs more in page faults than the parse saves), else read."""
    if size > 0:
        try:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a file system without mmap, a file emptied meanwhile
            m = None
        if m is not None:
            with m, memoryview(m) as view:
                return orjson.loads(view)
    return orjson.loads(f.read())


def check_numbers(v: Any, n: int | None, path: PathLike, where: str, field: str) -> list[float]:
    """``v`` as a list of finite numbers (of length ``n`` when given)."""
    ok = isinstance(v, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v
    )
    if not ok:
        raise fail(path, where, field, f"expected a list of numbers, got {str(v)[:80]}")
    if n is not None and len(v) != n:
        raise fail(path, where, field, f"expected {n} numbers, got {len(v)}")
    if not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
        raise fail(path, where, field, "expected finite numbers, got NaN/inf")
    return v


def check_scalar(v: Any, path: PathLike, where: str, field: str, kind: type = float) -> Any:
    """A number, also unwrapping PoseTrack17's one-element lists (``[3]`` -> ``3``)."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, str) and kind is int and v.strip().lstrip("-").isdigit():
        v = int(v)
    if kind is int:
        ok = (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer()
        )
        if not ok:
            raise fail(path, where, field, f"expected an integer, got {v!r}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
        raise fail(path, where, field, f"expected a finite number, got {v!r}")
    return float(v)


def check_flag(v: Any, path: PathLike, where: str, field: str) -> int:
    """A 0/1 flag given as a bool, a number, a digit string or a one-element list of those."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if v is None:
        return 0
    flag = int(v) if isinstance(v, bool) else check_scalar(v, path, where, field, int)
    if flag < 0:  # a negative visibility would count as a joint at its coordinates
        raise fail(path, where, field, f"expected a flag >= 0, got {flag}")
    return flag


def _bulk(rows: list[Any], n: int) -> np.ndarray | None:
    """``rows`` (lists of ``n`` finite numbers each) as one ``[len(rows), n]`` float64 array,
    or ``None`` when any row is not such a list (the caller then names the bad row)."""
    if not rows:
        return np.zeros((0, n))
    try:
        a = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if a.dtype.kind not in "iuf" or a.shape != (len(rows), n):
        return None
    a = a.astype(np.float64, copy=False)
    return a if np.isfinite(a).all() else None


def check_rows(
    anns: list[dict], field: str, n: int, path: PathLike, where: Sequence[str], optional: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [N, n], given [N] bool)`` of one numeric list field of every annotation.

    A missing field (or ``[]``, or ``null``) is not given when ``optional``, else an error; any
    other malformed value raises :class:`KpdiffInputError` naming the annotation and the field.
    """
    vals = [a.get(field) for a in anns]
    missing = vals.count(None) + vals.count([])  # C loops: the common cases cost nothing
    if missing == len(vals) and optional:
        return np.zeros((len(anns), n)), np.zeros(len(anns), bool)
    if missing == 0:
        given, idx, rows = np.ones(len(anns), bool), None, vals
    else:
        given = np.array([v is not None and v != [] for v in vals], bool)
        if not optional and not given.all():
            j = int(np.flatnonzero(~given)[0])
            raise fail(path, where[j], field, f"expected a list of {n} numbers, got nothing")
        idx = np.flatnonzero(given)
        rows = [vals[j] for j in idx.tolist()]
    vals_ = _bulk(rows, n)
    if vals_ is None:  # find and name the first bad one
        for j, r in enumerate(rows):
            k = j if idx is None else int(idx[j])
            check_numbers(r, n, path, where[k], field)
        k = 0 if idx is None else int(idx[0])
        raise fail(path, where[k], field, f"expected lists of {n} finite numbers")
    if idx is None:
        return vals_, given
    out = np.zeros((len(anns), n))
    out[idx] = vals_
    return out, given


def frame_number(name: str) -> int | None:
    """The number before the first ``_`` of the name's stem (``v/000012.jpg`` -> 12), else None;
    the stem is :attr:`pathlib.PurePath.stem`'s, found without building a path per image."""
    base = name[name.rfind("/") + 1 :]
    if not base or base == ".":  # pathlib's normalisation decides these rare names
        base = Path(name).name
    dot = base.rfind(".")
    stem = (base[:dot] if 0 < dot < len(base) - 1 else base).split("_")[0]
    return int(stem) if _DIGITS.fullmatch(stem) else None


_DIGITS = re.compile(r"\d+")
