"""When the fused Triton kernels run, and the switches that turn them off (or force them on).

Three modes, chosen per call:

- ``"auto"`` (default): Triton on CUDA tensors when triton imports, the torch reference otherwise
  (CPU tensors, no triton, or inside ``torch.compile``, which fuses the reference itself).
- ``"off"``: always the torch reference. The default becomes ``"off"`` when the environment
  variable ``KPDIFF_DISABLE_KERNELS`` is set to anything but ``""`` or ``"0"``.
- ``"force"``: always Triton, CPU tensors included. On CPU this needs ``TRITON_INTERPRET=1`` set
  before the kernels are first used (the test suite does this); it exists for testing.

:func:`use_kernels` overrides the environment variable. The mode is process-wide (not per
thread), like ``torch.backends`` flags.
"""

from __future__ import annotations

import functools
import os
from types import TracebackType
from typing import Literal

import torch

from kpdiff.errors import KpdiffError

__all__ = ["kernel_mode", "triton_available", "use_kernels", "use_triton"]

Mode = Literal["auto", "off", "force"]
ENV_DISABLE = "KPDIFF_DISABLE_KERNELS"

_override: Mode | None = None  # set by use_kernels; None follows the environment


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` works (checked once, only when a kernel could run)."""
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def kernel_mode() -> Mode:
    """The mode in force now: :func:`use_kernels`' choice, else the environment's default."""
    if _override is not None:
        return _override
    return "off" if os.environ.get(ENV_DISABLE, "") not in ("", "0") else "auto"


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether a dispatching function called on ``tensors`` now takes the Triton path.

    Args:
        tensors: the call's tensor arguments (all must be on CUDA in ``"auto"`` mode).

    Returns:
        ``True`` for Triton, ``False`` for the torch reference.
    """
    mode = kernel_mode()
    if mode == "off" or torch.compiler.is_compiling():
        return False
    if mode == "auto" and not all(t.is_cuda for t in tensors):
        return False
    return triton_available()


class _KernelSwitch:
    """Restores the previous mode when used as a context manager (see :func:`use_kernels`)."""

    def __init__(self, previous: Mode | None) -> None:
        self._previous = previous

    def __enter__(self) -> _KernelSwitch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _override
        _override = self._previous


def use_kernels(enabled: bool = True, *, force: bool = False) -> _KernelSwitch:
    """Turn the fused kernels on or off, for the process or (as a context manager) for a block.

    Takes effect at once; used in a ``with`` statement, the previous setting comes back at the
    end of the block. Overrides ``KPDIFF_DISABLE_KERNELS``.

    Args:
        enabled: ``False`` makes every dispatching function use its torch reference. Default
            ``True`` (``"auto"``: Triton on CUDA tensors when triton is installed).
        force: take the Triton path on any device, CPU tensors included (under
            ``TRITON_INTERPRET=1``); for tests. Default ``False``.

    Returns:
        A context manager that restores the previous setting on exit.

    Raises:
        KpdiffError: ``force=True`` with ``enabled=False``, or ``force=True`` without triton.

    Example:
        >>> with kpdiff.kernels.use_kernels(False):
        ...     keypoints, scores = codec.decode(heatmaps)   # torch reference on any device
    """
    global _override
    if force and not enabled:
        raise KpdiffError("use_kernels: force=True contradicts enabled=False")
    if force and not triton_available():
        raise KpdiffError("use_kernels(force=True): triton is not installed (pip install triton)")
    previous = _override
    _override = "force" if force else ("auto" if enabled else "off")
    return _KernelSwitch(previous)
