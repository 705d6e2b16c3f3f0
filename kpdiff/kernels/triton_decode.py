"""Triton heatmap decoding: argmax, quarter-pixel shift and max value in one read of the map.

Meaning: :func:`kpdiff.kernels.reference.decode_heatmaps_reference` (=
``GaussianHeatmapCodec.decode`` with ``refine="quarter"`` or ``"none"``). One program per joint
map reads it once (any strides), keeps the first maximum in row-major order, reads the four
neighbours of the argmax and writes ``(x, y)`` in input pixels and the max value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpdiff.kernels._triton_common import (
    argmax_first,
    dense_pixels,
    launch_kwargs,
    next_pow2,
    pixel_offsets,
)
from kpdiff.strides import HEATMAP_STRIDE

__all__ = ["decode_heatmaps_triton"]


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _decode_kernel(
    hm_ptr, kp_ptr, mv_ptr,
    K, H, W, sb, sk, sh, sw, stride,
    QUARTER: tl.constexpr, DENSE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)  # b·K + k
    base = hm_ptr + (row // K).to(tl.int64) * sb + (row % K) * sk
    offs = tl.arange(0, BLOCK)
    best = tl.full([], float("-inf"), tl.float32)
    best_i = tl.full([], 0, tl.int32)
    for start in range(0, H * W, BLOCK):
        s = start + offs
        val = tl.load(
            base + pixel_offsets(s, W, sh, sw, DENSE), mask=s < H * W, other=float("-inf")
        )
        cm, ci = tl.reduce((val.to(tl.float32), s), 0, argmax_first)
        better = cm > best  # strict: an equal value in a later chunk never wins
        best_i = tl.where(better, ci, best_i)
        best = tl.where(better, cm, best)
    u = best_i % W
    v = best_i // W
    cx = u.to(tl.float32)
    cy = v.to(tl.float32)
    if QUARTER:  # a quarter pixel toward the larger neighbour; a missing one counts as 0
        at = base + v * sh + u * sw
        right = tl.load(at + sw, mask=u < W - 1, other=0.0).to(tl.float32)
        left = tl.load(at - sw, mask=u > 0, other=0.0).to(tl.float32)
        down = tl.load(at + sh, mask=v < H - 1, other=0.0).to(tl.float32)
        up = tl.load(at - sh, mask=v > 0, other=0.0).to(tl.float32)
        cx = cx + 0.25 * _sign(right - left)
        cy = cy + 0.25 * _sign(down - up)
    tl.store(kp_ptr + 2 * row, (cx + 0.5) * stride - 0.5)  # input pixels, pixel centres
    tl.store(kp_ptr + 2 * row + 1, (cy + 0.5) * stride - 0.5)
    tl.store(mv_ptr + row, best)


def _block(hw: int, device: torch.device) -> int:
    """Pixels read per loop step: the whole map up to 4096 (8192 under the interpreter)."""
    return min(next_pow2(hw), 8192 if device.type == "cpu" else 4096)


def decode_heatmaps_triton(
    heatmaps: torch.Tensor, stride: float = HEATMAP_STRIDE, refine: str = "quarter"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused :func:`~kpdiff.kernels.reference.decode_heatmaps_reference` (same arguments)."""
    b, k, h, w = heatmaps.shape
    keypoints = torch.empty((b, k, 2), device=heatmaps.device, dtype=torch.float32)
    maxvals = torch.empty((b, k), device=heatmaps.device, dtype=torch.float32)
    if maxvals.numel() == 0:
        return keypoints, maxvals
    block = _block(h * w, heatmaps.device)
    _decode_kernel[(b * k,)](
        heatmaps, keypoints, maxvals, k, h, w, *heatmaps.stride(), float(stride),
        QUARTER=refine == "quarter", DENSE=dense_pixels(heatmaps), BLOCK=block,
        **launch_kwargs(heatmaps.device, num_warps=8 if block >= 2048 else 4),
    )  # fmt: skip
    return keypoints, maxvals
