"""Errors raised by kpdiff and small helpers that check user input.

Every check names the argument (or file), what it received and what it expected, so that a user
never has to read a traceback to find out which of their inputs was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is checked: reading files needs no torch
    import torch

__all__ = ["KpdiffError", "KpdiffInputError", "check_finite", "check_shape"]


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


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise :class:`KpdiffInputError` when ``x`` holds NaN or infinite values."""
    import torch

    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise KpdiffInputError(f"{name}: expected finite values, got {bad} NaN/inf entries")
