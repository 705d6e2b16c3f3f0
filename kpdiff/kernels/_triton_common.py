"""Helpers shared by the Triton kernels (imports triton: load lazily).

Reductions go through ``tl.reduce`` with the combine functions below rather than ``tl.max`` /
``tl.sum``: those are ``@triton.jit`` library functions fixed when triton is imported, so they
break under ``TRITON_INTERPRET=1`` when triton was imported before the variable was set.
These ones are decorated when this module is imported, so the interpreter always sees them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "add",
    "argmax_first",
    "dense_pixels",
    "launch_kwargs",
    "maximum",
    "next_pow2",
    "pixel_offsets",
    "sigmoid",
]


@triton.jit
def maximum(a, b):
    """Combine function of a max reduction."""
    return tl.maximum(a, b)


@triton.jit
def add(a, b):
    """Combine function of a sum reduction."""
    return a + b


@triton.jit
def argmax_first(v1, i1, v2, i2):
    """Combine function of an argmax that keeps the first (smallest) index among ties."""
    take2 = (v2 > v1) | ((v2 == v1) & (i2 < i1))
    return tl.where(take2, v2, v1), tl.where(take2, i2, i1)


@triton.jit
def sigmoid(x):
    """``1 / (1 + e^−x)`` in float32 (0 at −inf, 1 at +inf)."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def pixel_offsets(s, W, sh, sw, DENSE: tl.constexpr):
    """Element offsets of flat pixel indices ``s`` (row-major over ``[h, W]``) in one map.

    With ``DENSE`` the offset is ``s`` itself: the compiler can then see runs of consecutive
    addresses and emit 128-bit loads, which ``(s // W)·sh + (s % W)·sw`` hides unless ``W`` is a
    multiple of 16.
    """
    if DENSE:
        return s
    return (s // W) * sh + (s % W) * sw


def dense_pixels(t: torch.Tensor) -> bool:
    """Whether each map of ``t [..., h, w]`` holds its ``h·w`` pixels consecutively (any outer
    strides), so that :func:`pixel_offsets` may take its ``DENSE`` path."""
    h, w = t.shape[-2], t.shape[-1]
    return (w == 1 or t.stride(-1) == 1) and (h == 1 or t.stride(-2) == w)


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ ``max(n, 1)``."""
    return triton.next_power_of_2(max(int(n), 1))


def launch_kwargs(device: torch.device, num_warps: int = 4) -> dict[str, object]:
    """Launch options: ``num_warps`` on a GPU, nothing under the CPU interpreter.

    FMA contraction is turned off so that ``a·b + c`` rounds as torch's separate kernels do;
    every kernel here is memory-bound, so this costs nothing measurable.
    """
    if device.type == "cpu":
        return {}
    return {"num_warps": num_warps, "enable_fp_fusion": False}
