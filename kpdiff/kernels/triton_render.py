"""Triton Gaussian target rendering: each heatmap pixel computed and written once.

Meaning: :func:`kpdiff.kernels.reference.render_heatmaps_reference` (=
``GaussianHeatmapCodec.encode``). The torch version builds the map from broadcast temporaries
(``(x − u)²``, ``(y − v)²``, their sum, ``exp``, the weight product: five full-size passes);
here one program renders ``BLOCK`` pixels of one joint and also decides its weight.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpdiff.kernels._triton_common import launch_kwargs, next_pow2
from kpdiff.strides import HEATMAP_STRIDE

__all__ = ["render_heatmaps_triton"]


@triton.jit
def _render_kernel(
    kp_ptr, vis_ptr, hm_ptr, w_ptr,
    K, H, W, n_blocks, skb, skk, skd, svb, svk,
    stride, two_sigma_sq, lo, hi_u, hi_v,
    BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    row = pid // n_blocks  # b·K + k
    blk = pid % n_blocks
    b = (row // K).to(tl.int64)
    k = row % K
    kp = kp_ptr + b * skb + k * skk
    x = tl.load(kp).to(tl.float32)
    y = tl.load(kp + skd).to(tl.float32)
    vis = tl.load(vis_ptr + b * svb + k * svk)
    u = tl.div_rn(x + 0.5, stride) - 0.5  # heatmap coords, pixel-centre convention
    v = tl.div_rn(y + 0.5, stride) - 0.5
    inside = (u > lo) & (u < hi_u) & (v > lo) & (v < hi_v)  # within 3σ of the map
    weight = tl.where((vis > 0) & inside, 1.0, 0.0)

    s = blk * BLOCK + tl.arange(0, BLOCK)
    mask = s < H * W
    dx = (s % W).to(tl.float32) - u
    dy = (s // W).to(tl.float32) - v
    g = tl.exp(tl.div_rn(-(dx * dx + dy * dy), two_sigma_sq))  # exp(−d² / 2σ²)
    tl.store(hm_ptr + row.to(tl.int64) * (H * W) + s, g * weight, mask=mask)
    if blk == 0:
        tl.store(w_ptr + row, weight)


def _block(hw: int, device: torch.device) -> int:
    """Pixels per program: up to 1024 on a GPU, a whole map under the CPU interpreter."""
    return min(next_pow2(hw), 8192 if device.type == "cpu" else 1024)


def render_heatmaps_triton(
    keypoints: torch.Tensor,
    visibility: torch.Tensor,
    heatmap_size: tuple[int, int] = (64, 48),
    stride: float = HEATMAP_STRIDE,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused :func:`~kpdiff.kernels.reference.render_heatmaps_reference` (same arguments)."""
    b, k = keypoints.shape[:2]
    h, w = heatmap_size
    heatmaps = torch.empty((b, k, h, w), device=keypoints.device, dtype=torch.float32)
    weights = torch.empty((b, k), device=keypoints.device, dtype=torch.float32)
    if heatmaps.numel() == 0:
        return heatmaps, weights
    if visibility.dtype == torch.bool:
        visibility = visibility.view(torch.uint8)
    block = _block(h * w, keypoints.device)
    n_blocks = triton.cdiv(h * w, block)
    reach = 3 * sigma
    _render_kernel[(b * k * n_blocks,)](
        keypoints, visibility, heatmaps, weights,
        k, h, w, n_blocks, *keypoints.stride(), *visibility.stride(),
        float(stride), 2 * sigma**2, -reach, w - 1 + reach, h - 1 + reach,
        BLOCK=block, **launch_kwargs(keypoints.device),
    )  # fmt: skip
    return heatmaps, weights
