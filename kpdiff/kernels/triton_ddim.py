"""Triton DDIM update for x₀-prediction: one read of x_t, x̂₀ (and z), one write of x_prev.

Meaning: :func:`kpdiff.kernels.reference.ddim_step_reference` (= diffusers'
``DDIMScheduler.step`` with ``prediction_type="sample"``). The scalar coefficients come from
:func:`~kpdiff.kernels.reference.ddim_coefficients`, so both paths use the same float32 values;
the chain of seven to nine elementwise torch kernels becomes one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpdiff.kernels._triton_common import launch_kwargs, next_pow2
from kpdiff.kernels.reference import ddim_coefficients

__all__ = ["ddim_step_triton"]


@triton.jit
def _ddim_kernel(
    x_ptr, x0_ptr, z_ptr, out_ptr, N,
    c_a, c_b, c_prev, c_dir, c_std, lo, hi,
    CLIP: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x0 = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    eps = tl.div_rn(x - c_a * x0, c_b)  # ε̂ = (x_t − √ᾱ_t x̂₀) / √(1 − ᾱ_t), unclipped x̂₀
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, lo), hi)
    prev = c_prev * x0 + c_dir * eps  # √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σ²) ε̂
    if HAS_NOISE:
        prev = prev + c_std * tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, prev.to(out_ptr.dtype.element_ty), mask=mask)


def _block(n: int, device: torch.device) -> int:
    """Elements per program: 1024 on a GPU, one big block under the CPU interpreter."""
    return min(next_pow2(n), 65536) if device.type == "cpu" else 1024


def ddim_step_triton(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    alpha_t: float | torch.Tensor,
    alpha_prev: float | torch.Tensor,
    *,
    eta: float = 0.0,
    clip_range: float | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused :func:`~kpdiff.kernels.reference.ddim_step_reference` (same arguments, no checks).

    Non-contiguous inputs are copied to contiguous ones first (one extra pass each).
    """
    c_a, c_b, c_prev, c_dir, std = ddim_coefficients(alpha_t, alpha_prev, eta)
    x, x0 = x_t.contiguous(), x0_hat.contiguous()
    has_noise = std > 0
    if has_noise and noise is None:
        raise ValueError("ddim_step_triton: sigma_t > 0 needs noise")
    z = noise.contiguous() if has_noise and noise is not None else x
    out = torch.empty(x.shape, device=x.device, dtype=torch.promote_types(x.dtype, x0.dtype))
    n = out.numel()
    if n == 0:
        return out
    block = _block(n, x.device)
    clip = clip_range is not None
    r = float(clip_range) if clip_range is not None else 0.0
    _ddim_kernel[(triton.cdiv(n, block),)](
        x, x0, z, out, n, c_a, c_b, c_prev, c_dir, std, -r, r,
        CLIP=clip, HAS_NOISE=has_noise, BLOCK=block, **launch_kwargs(x.device),
    )  # fmt: skip
    return out
