"""Triton lookup ``[A ⊙ 𝔽, 𝔽]`` (or ``A ⊙ 𝔽`` alone) with ``A = sigmoid(max_c x̄)``, forward and
backward.

Meaning: :func:`kpdiff.kernels.reference.lookup_concat_reference` (``CONCAT``) and
:func:`~kpdiff.kernels.reference.lookup_mask_reference`. One program owns a strip of
``BLOCK_S`` pixels of one sample and walks the channels in ``BLOCK_C`` chunks: it reads x̄ once
(the max), 𝔽 once, and writes the output (both halves with ``CONCAT``), so neither ``A`` nor an
intermediate ``A ⊙ 𝔽`` is ever materialised. The backward recomputes ``A`` (and the argmax)
instead of saving them.

Inputs may have any strides; outputs are contiguous. When an input's pixels are dense (``h·w``
consecutive elements per channel, as in NCHW, whatever its channel and batch strides) its
address is ``base + pixel``, which the compiler can see is contiguous and turn into 128-bit
loads; other layouts go through ``row·stride_h + col·stride_w`` and load element by element.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kpdiff.kernels._triton_common import (
    add,
    dense_pixels,
    launch_kwargs,
    maximum,
    next_pow2,
    pixel_offsets,
    sigmoid,
)

__all__ = ["Lookup", "lookup_backward", "lookup_forward"]


@triton.jit
def _lookup_fwd_kernel(
    x_ptr, f_ptr, out_ptr,
    CX, C, HW, W, n_sblocks,
    sxb, sxc, sxh, sxw, sfb, sfc, sfh, sfw,
    CONCAT: tl.constexpr, X_DENSE: tl.constexpr, F_DENSE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid // n_sblocks).to(tl.int64)
    s = (pid % n_sblocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = s < HW
    x_base = x_ptr + b * sxb + pixel_offsets(s, W, sxh, sxw, X_DENSE)[None, :]
    f_base = f_ptr + b * sfb + pixel_offsets(s, W, sfh, sfw, F_DENSE)[None, :]
    cr = tl.arange(0, BLOCK_C)

    m = tl.full([BLOCK_S], float("-inf"), tl.float32)  # max_c x̄
    for c0 in range(0, CX, BLOCK_C):
        c = c0 + cr
        valid = (c < CX)[:, None] & smask[None, :]
        x = tl.load(x_base + c[:, None] * sxc, mask=valid, other=float("-inf"))
        m = tl.maximum(m, tl.reduce(x.to(tl.float32), 0, maximum))
    a = sigmoid(m)[None, :]  # A

    out_base = out_ptr + b * ((2 if CONCAT else 1) * C * HW) + s[None, :]
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cr
        valid = (c < C)[:, None] & smask[None, :]
        f = tl.load(f_base + c[:, None] * sfc, mask=valid, other=0.0).to(tl.float32)
        o = out_base + c[:, None] * HW
        tl.store(o, (a * f).to(out_ptr.dtype.element_ty), mask=valid)  # A ⊙ 𝔽
        if CONCAT:
            tl.store(o + C * HW, f.to(out_ptr.dtype.element_ty), mask=valid)  # 𝔽


@triton.jit
def _lookup_bwd_kernel(
    x_ptr, f_ptr, g_ptr, gx_ptr, gf_ptr,
    CX, C, HW, W, n_sblocks,
    sxb, sxc, sxh, sxw, sfb, sfc, sfh, sfw, sgb, sgc, sgh, sgw,
    NEED_X: tl.constexpr, NEED_F: tl.constexpr, CONCAT: tl.constexpr,
    X_DENSE: tl.constexpr, F_DENSE: tl.constexpr, G_DENSE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid // n_sblocks).to(tl.int64)
    s = (pid % n_sblocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = s < HW
    x_base = x_ptr + b * sxb + pixel_offsets(s, W, sxh, sxw, X_DENSE)[None, :]
    f_base = f_ptr + b * sfb + pixel_offsets(s, W, sfh, sfw, F_DENSE)[None, :]
    g_base = g_ptr + b * sgb + pixel_offsets(s, W, sgh, sgw, G_DENSE)[None, :]
    cr = tl.arange(0, BLOCK_C)

    # max_c x̄ and how many channels reach it (amax's backward splits the gradient among ties)
    m = tl.full([BLOCK_S], float("-inf"), tl.float32)
    count = tl.full([BLOCK_S], 0.0, tl.float32)
    for c0 in range(0, CX, BLOCK_C):
        c = c0 + cr
        valid = (c < CX)[:, None] & smask[None, :]
        x = tl.load(x_base + c[:, None] * sxc, mask=valid, other=float("-inf")).to(tl.float32)
        cm = tl.reduce(x, 0, maximum)
        hits = tl.reduce(((x == cm[None, :]) & valid).to(tl.float32), 0, add)
        count = tl.where(cm > m, hits, tl.where(cm == m, count + hits, count))
        m = tl.maximum(m, cm)
    a = sigmoid(m)

    # ∂L/∂𝔽 = A ⊙ g₁ + g₂ and ∂L/∂A = Σ_c g₁ ⊙ 𝔽, with g = [g₁, g₂] split at channel C
    # (without CONCAT, g = g₁ and there is no g₂)
    grad_a = tl.full([BLOCK_S], 0.0, tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cr
        valid = (c < C)[:, None] & smask[None, :]
        g1 = tl.load(g_base + c[:, None] * sgc, mask=valid, other=0.0).to(tl.float32)
        if NEED_F:
            gf = a[None, :] * g1
            if CONCAT:
                g2 = tl.load(g_base + (c + C)[:, None] * sgc, mask=valid, other=0.0)
                gf = gf + g2.to(tl.float32)
            gf_ptrs = gf_ptr + b * (C * HW) + c[:, None] * HW + s[None, :]
            tl.store(gf_ptrs, gf.to(gf_ptr.dtype.element_ty), mask=valid)
        if NEED_X:
            f = tl.load(f_base + c[:, None] * sfc, mask=valid, other=0.0).to(tl.float32)
            grad_a += tl.reduce(g1 * f, 0, add)

    if NEED_X:
        # ∂L/∂x̄_c = ∂L/∂A · A(1 − A) / #ties on the argmax channel(s), 0 elsewhere
        grad_m = (grad_a * a * (1.0 - a) / tl.maximum(count, 1.0))[None, :]
        for c0 in range(0, CX, BLOCK_C):
            c = c0 + cr
            valid = (c < CX)[:, None] & smask[None, :]
            x = tl.load(x_base + c[:, None] * sxc, mask=valid, other=0.0).to(tl.float32)
            gx = tl.where(x == m[None, :], grad_m, 0.0)
            gx_ptrs = gx_ptr + b * (CX * HW) + c[:, None] * HW + s[None, :]
            tl.store(gx_ptrs, gx.to(gx_ptr.dtype.element_ty), mask=valid)


def _blocks(channels: int, hw: int, device: torch.device) -> tuple[int, int]:
    """``(BLOCK_C, BLOCK_S)``: 32×64 tiles on a GPU, one big tile under the CPU interpreter."""
    if device.type == "cpu":  # the interpreter pays per program and per op, not per element
        block_s = min(next_pow2(hw), 1024)
        return min(next_pow2(channels), max(1, 16384 // block_s)), block_s
    return 32, 64 if hw <= 1024 else 128


def _spatial_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def lookup_forward(xbar: torch.Tensor, feat: torch.Tensor, *, concat: bool = True) -> torch.Tensor:
    """``[A ⊙ 𝔽, 𝔽]`` (``concat``) or ``A ⊙ 𝔽`` from ``xbar [B, Cx, h, w]``, ``feat [B, C, h, w]``.

    Output ``[B, 2C, h, w]`` or ``[B, C, h, w]``, dtype ``torch.promote_types(xbar.dtype,
    feat.dtype)``, arithmetic float32. No checks here (see :func:`kpdiff.kernels.lookup_concat`
    and :func:`kpdiff.kernels.lookup_mask`).
    """
    b, cx, h, w = xbar.shape
    c = feat.shape[1]
    out = torch.empty(
        (b, (2 if concat else 1) * c, h, w),
        device=feat.device,
        dtype=torch.promote_types(xbar.dtype, feat.dtype),
    )
    if out.numel() == 0:
        return out
    block_c, block_s = _blocks(max(cx, c), h * w, feat.device)
    n_sblocks = triton.cdiv(h * w, block_s)
    _lookup_fwd_kernel[(b * n_sblocks,)](
        xbar, feat, out, cx, c, h * w, w, n_sblocks,
        *_spatial_strides(xbar), *_spatial_strides(feat),
        CONCAT=concat, X_DENSE=dense_pixels(xbar), F_DENSE=dense_pixels(feat),
        BLOCK_C=block_c, BLOCK_S=block_s, **launch_kwargs(feat.device),
    )  # fmt: skip
    return out


def lookup_backward(
    xbar: torch.Tensor,
    feat: torch.Tensor,
    grad_out: torch.Tensor,
    need_x: bool = True,
    need_f: bool = True,
    *,
    concat: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`lookup_forward` w.r.t. ``xbar`` and ``feat`` (or ``None``).

    Args:
        xbar: ``[B, Cx, h, w]`` as given to the forward.
        feat: ``[B, C, h, w]`` as given to the forward.
        grad_out: ``[B, 2C, h, w]`` (``concat``) or ``[B, C, h, w]``, any strides.
        need_x: compute ``∂L/∂x̄``. Default ``True``.
        need_f: compute ``∂L/∂𝔽``. Default ``True``.
        concat: as given to the forward. Default ``True``.

    Returns:
        ``(grad_xbar [B, Cx, h, w] | None, grad_feat [B, C, h, w] | None)`` in the inputs' dtypes.
    """
    b, cx, h, w = xbar.shape
    c = feat.shape[1]
    gx = torch.empty(xbar.shape, device=xbar.device, dtype=xbar.dtype) if need_x else None
    gf = torch.empty(feat.shape, device=feat.device, dtype=feat.dtype) if need_f else None
    if (not need_x and not need_f) or grad_out.numel() == 0:
        return (gx.zero_() if gx is not None else None), (gf.zero_() if gf is not None else None)
    block_c, block_s = _blocks(max(cx, c), h * w, feat.device)
    n_sblocks = triton.cdiv(h * w, block_s)
    _lookup_bwd_kernel[(b * n_sblocks,)](
        xbar, feat, grad_out, gx if need_x else xbar, gf if need_f else feat,
        cx, c, h * w, w, n_sblocks,
        *_spatial_strides(xbar), *_spatial_strides(feat), *_spatial_strides(grad_out),
        NEED_X=need_x, NEED_F=need_f, CONCAT=concat,
        X_DENSE=dense_pixels(xbar), F_DENSE=dense_pixels(feat),
        G_DENSE=dense_pixels(grad_out), BLOCK_C=block_c, BLOCK_S=block_s,
        **launch_kwargs(feat.device),
    )  # fmt: skip
    return gx, gf


class Lookup(torch.autograd.Function):
    """Autograd wrapper: forward and backward both fused; saves only x̄ and 𝔽 (no mask).

    ``Lookup.apply(xbar, feat, concat)``.
    """

    @staticmethod
    def forward(ctx: Any, xbar: torch.Tensor, feat: torch.Tensor, concat: bool) -> torch.Tensor:
        ctx.save_for_backward(xbar, feat)
        ctx.concat = concat
        return lookup_forward(xbar, feat, concat=concat)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xbar, feat = ctx.saved_tensors
        need_x, need_f = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gf = lookup_backward(
            xbar, feat, grad_out, need_x=need_x, need_f=need_f, concat=ctx.concat
        )
        return gx, gf, None
