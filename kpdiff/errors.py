"""Errors raised by kpdiff and small helpers that check user input.

Every check names the argument (or file), what it received and what it expected, so that a user
never has to read a traceback to find out which of their inputs was wrong.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is checked: reading files needs no torch
    import torch

__all__ = [
    "KpdiffError",
    "KpdiffInputError",
    "check_callable",
    "check_dtype",
    "check_finite",
    "check_finite_tree",
    "check_generator",
    "check_int",
    "check_number",
    "check_range",
    "check_shape",
    "check_sizes",
]


CLIP_MAX_ABS = 1e4
"""The largest ``|x|`` a model input clip may hold: normalised images are O(1), and far larger
values overflow the encoder's normalisation to NaN (``DiffPose`` and the ONNX sampler check it)."""


class KpdiffError(Exception):
    """Base class of every error kpdiff raises on purpose."""


class KpdiffInputError(KpdiffError, ValueError):
    """A user input (tensor, argument, file) does not have the form kpdiff expects.

    Subclasses ``ValueError`` so that ``except ValueError`` keeps working.
    """


def check_shape(
    name: str,
    x: torch.Tensor,
    expected: Sequence[int | str | None],
    sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Check that ``x`` has exactly the shape ``expected`` and return the sizes bound to names.

    Args:
        name: the argument's name, used in the error message.
        x: the tensor to check.
        expected: one entry per dimension: an ``int`` (that exact size), a ``str`` (a named size
            that must agree wherever the same name appears in this call) or ``None`` (any size).

    Returns:
        ``{size_name: size}`` for the named dimensions.

    Raises:
        KpdiffInputError: when ``x`` is not a tensor, has the wrong rank or a wrong size. There is
            no broadcasting: ``[K, 2]`` is not accepted where ``[B, K, 2]`` is expected.
    """
    import torch

    spec = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    if not isinstance(x, torch.Tensor):
        raise KpdiffInputError(f"{name}: expected a tensor of shape {spec}, got {type(x).__name__}")
    if x.dim() != len(expected):
        raise KpdiffInputError(
            f"{name}: expected shape {spec} ({len(expected)} dims), got {list(x.shape)} "
            f"({x.dim()} dims)"
        )
    bound: dict[str, int] = {} if sizes is None else sizes
    for dim, (size, want) in enumerate(zip(x.shape, expected, strict=True)):
        if want is None:
            continue
        if isinstance(want, str):
            if want in bound and bound[want] != size:
                raise KpdiffInputError(
                    f"{name}: expected shape {spec}, got {list(x.shape)}: dim {dim} ({want}) is "
                    f"{size} but {want} = {bound[want]} from the other arguments"
                )
            bound[want] = size
        elif size != want:
            raise KpdiffInputError(
                f"{name}: expected shape {spec}, got {list(x.shape)} (dim {dim} must be {want})"
            )
    return bound


def _show(value: object, limit: int = 60) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters (tensors print several lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bound(low: float | None, high: float | None, low_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return (" " + " and ".join(parts)) if parts else ""


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite real number (python / numpy scalar or 0-d real tensor, not a bool) in a range.

    Args:
        name: the argument's name, used in the error message.
        value: what the user passed.
        low: smallest value allowed (``None``: no bound); excluded when ``low_open``.
        high: largest value allowed (``None``: no bound).

    Returns:
        ``value`` as a python float.

    Raises:
        KpdiffInputError: e.g. ``"eta: expected a finite number >= 0, got nan"``.
    """
    x = _real_scalar(value)
    ok = x is not None and math.isfinite(x)
    if ok and low is not None:
        ok = x > low if low_open else x >= low
    if ok and high is not None:
        ok = x <= high
    if not ok:
        raise KpdiffInputError(
            f"{name}: expected a finite number{_bound(low, high, low_open)}, got {_show(value)}"
        )
    return float(x)  # type: ignore[arg-type]


def check_int(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """An integer (python / numpy, not a bool) in ``[low, high]``; returns it as a python int.

    Raises:
        KpdiffInputError: e.g. ``"num_samples: expected an integer >= 1, got 0"``.
    """
    n = _integer(value)
    if n is None or n < low or (high is not None and n > high):
        raise KpdiffInputError(
            f"{name}: expected an integer{_bound(low, high, False)}, got {_show(value)}"
        )
    return n


def check_sizes(name: str, value: object, spec: Sequence[str]) -> tuple[int, ...]:
    """``len(spec)`` integer sizes >= 1 (a tuple, list or ``torch.Size``); integral floats such
    as ``64.0`` are accepted and returned as ints.

    Args:
        name: the argument's name.
        value: what the user passed.
        spec: the names of the sizes, e.g. ``("H", "W")``, for the message.

    Raises:
        KpdiffInputError: e.g. ``"heatmap_size: expected (H, W), 2 integers >= 1, got (8.5, 6)"``.
    """
    want = f"({', '.join(spec)}), {len(spec)} integers >= 1"
    items = list(value) if isinstance(value, list | tuple) or _is_size(value) else None
    if items is None or len(items) != len(spec):
        raise KpdiffInputError(f"{name}: expected {want}, got {_show(value)}")
    sizes = []
    for item in items:
        n = _integer(item)
        if n is None and isinstance(item, float) and math.isfinite(item) and item.is_integer():
            n = int(item)
        if n is None or n < 1:
            raise KpdiffInputError(f"{name}: expected {want}, got {_show(value)}")
        sizes.append(n)
    return tuple(sizes)


def check_dtype(name: str, x: torch.Tensor, kind: str = "float", hint: str = "") -> None:
    """Raise unless ``x``'s dtype is of ``kind``.

    Args:
        kind: ``"float"`` (floating point), ``"real"`` (floating point or integer, no bool) or
            ``"nocomplex"`` (anything but complex: bool, integer or floating point).
        hint: appended to the message, e.g. ``" (normalised float images)"``.
    """
    import torch

    dtype = x.dtype
    if kind == "float":
        ok = dtype.is_floating_point
        want = "a floating-point tensor"
    elif kind == "real":
        ok = dtype != torch.bool and not dtype.is_complex
        want = "a real (float or integer) tensor"
    else:
        ok = not dtype.is_complex
        want = "a real or bool tensor"
    if not ok:
        raise KpdiffInputError(f"{name}: expected {want}{hint}, got {dtype}")


def check_finite(name: str, x: torch.Tensor, *, max_abs: float | None = None) -> None:
    """Raise :class:`KpdiffInputError` when ``x`` holds NaN or infinite values.

    Args:
        name: the argument's name.
        x: the tensor (integer and bool tensors are always finite).
        max_abs: also refuse finite values with ``|x| > max_abs`` (e.g. float64 input that a
            float32 computation would turn into inf). Default ``None``.
    """
    import torch

    if not x.is_floating_point():
        return
    # ~(|x| <= max_abs) is also True for NaN
    bad = ~torch.isfinite(x) if max_abs is None else ~(x.abs() <= max_abs)
    if bool(bad.any()):
        n_bad = int(bad.sum())
        n_inf = int((~torch.isfinite(x)).sum())
        if n_inf:
            raise KpdiffInputError(f"{name}: expected finite values, got {n_inf} NaN/inf entries")
        raise KpdiffInputError(
            f"{name}: expected values with |x| <= {max_abs:.3g}, got {n_bad} entries beyond"
        )


def check_range(
    name: str, x: torch.Tensor, low: float | None = None, high: float | None = None
) -> None:
    """Raise unless every value of ``x`` is finite and in ``[low, high]`` (one device sync).

    Messages: ``"heatmaps: expected finite values in [0, 1], got 3 NaN/inf entries"`` or
    ``"heatmaps: expected values in [0, 1], got values in [-0.5, 100]"``.
    """
    import torch

    xf = x if x.is_floating_point() else x.float()
    ok = torch.isfinite(xf)
    if low is not None:
        ok &= xf >= low
    if high is not None:
        ok &= xf <= high
    if bool(ok.all()):
        return
    if low is not None and high is not None:
        where = f"in [{low:g}, {high:g}]"
    else:
        where = _bound(low, high, False).strip() or "(any)"
    n_inf = int((~torch.isfinite(xf)).sum())
    if n_inf:
        raise KpdiffInputError(
            f"{name}: expected finite values {where}, got {n_inf} NaN/inf entries"
        )
    raise KpdiffInputError(
        f"{name}: expected values {where}, got values in "
        f"[{float(xf.min()):.4g}, {float(xf.max()):.4g}]"
    )


def check_finite_tree(name: str, tree: object) -> None:
    """:func:`check_finite` on every tensor in a tuple / list / dict (``cond``), one sync when all
    are finite; the message names the entry, e.g. ``"cond[1]: expected finite values, …"``."""
    import torch
    from torch.utils._pytree import keystr, tree_flatten_with_path

    leaves = [
        (path, leaf)
        for path, leaf in tree_flatten_with_path(tree)[0]
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and leaf.numel()
    ]
    if not leaves:
        return
    flags = torch.stack([torch.isfinite(leaf).all().to(leaves[0][1].device) for _, leaf in leaves])
    if bool(flags.all()):
        return
    for path, leaf in leaves:
        check_finite(f"{name}{keystr(path)}", leaf)


def check_generator(name: str, generator: object) -> None:
    """Raise unless ``generator`` is ``None`` or a ``torch.Generator``."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise KpdiffInputError(
            f"{name}: expected a torch.Generator or None, got {type(generator).__name__}"
        )


def check_callable(name: str, value: object, what: str) -> None:
    """Raise unless ``value`` is callable; ``what`` describes the expected signature."""
    if not callable(value):
        raise KpdiffInputError(f"{name}: expected {what}, got {type(value).__name__}")


def _integer(value: object) -> int | None:
    """``value`` as an int when it is an integer (python, numpy, 0-d integer tensor), else None."""
    if isinstance(value, bool):
        return None
    if _is_tensor(value):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex:  # type: ignore[attr-defined]
            return None
        if str(value.dtype) == "torch.bool":  # type: ignore[attr-defined]
            return None
        return int(value.item())  # type: ignore[attr-defined]
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _real_scalar(value: object) -> float | None:
    """``value`` as a float when it is a real number (no bool, no complex), else None."""
    if isinstance(value, bool):
        return None
    if _is_tensor(value):
        if value.dim() != 0 or value.dtype.is_complex or str(value.dtype) == "torch.bool":  # type: ignore[attr-defined]
            return None
        return float(value.item())  # type: ignore[attr-defined]
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _is_tensor(value: object) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_size(value: object) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Size)
