"""Fused kernels for the hot paths, each with a plain torch reference that defines its meaning.

Every function here dispatches: the Triton kernel on CUDA tensors when triton is installed and
kernels are enabled, the torch reference in :mod:`kpdiff.kernels.reference` otherwise (CPU
tensors, no triton, ``KPDIFF_DISABLE_KERNELS=1``, ``use_kernels(False)``, or inside
``torch.compile``). triton is imported only when a Triton path is taken, so ``import kpdiff``
never needs it. See ``docs/kernels.md`` for what each kernel fuses and its tolerances.

Every public function here checks its input (shapes, dtypes, finite values, the scalars) and
raises :class:`~kpdiff.errors.KpdiffInputError` naming the argument; the finiteness checks cost
one device sync per call. kpdiff's own callers that have checked their input already use the
unchecked ``_*_unchecked`` forms (``LookupInteraction`` runs the lookup at every step).
"""

from __future__ import annotations

from typing import Any

import torch

from kpdiff.errors import (
    KpdiffInputError,
    check_dtype,
    check_finite,
    check_generator,
    check_number,
    check_shape,
    check_sizes,
)
from kpdiff.kernels._dispatch import kernel_mode, triton_available, use_kernels, use_triton
from kpdiff.kernels.reference import (
    ddim_coefficients,
    ddim_step_reference,
    decode_heatmaps_reference,
    lookup_concat_reference,
    lookup_mask_reference,
    render_heatmaps_reference,
)
from kpdiff.strides import HEATMAP_STRIDE

__all__ = [
    "ddim_step",
    "decode_heatmaps",
    "kernel_mode",
    "lookup_concat",
    "lookup_mask",
    "render_heatmaps",
    "triton_available",
    "use_kernels",
    "use_triton",
]


def lookup_concat(xbar: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """DiffPose's lookup ``[A ⊙ 𝔽, 𝔽]`` with ``A = sigmoid(max over channels of x̄)``.

    Differentiable on both paths; the Triton backward gives x̄ the gradient on its argmax
    channel only, split evenly among ties (as ``torch.amax``). Meaning:
    :func:`~kpdiff.kernels.reference.lookup_concat_reference`.

    Args:
        xbar: refined heatmap tokens x̄ ``[B, Cx, h, w]``, floating point, finite, any strides.
        feat: features 𝔽 ``[B, C, h, w]``, floating point, finite, any strides, same device.

    Returns:
        ``[B, 2C, h, w]`` (contiguous), dtype ``torch.promote_types(xbar.dtype, feat.dtype)``.

    Raises:
        KpdiffInputError: a wrong shape, a non-float dtype or NaN/inf values, naming the tensor.
    """
    return _lookup(xbar, feat, concat=True)


def lookup_mask(xbar: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """The masked features ``A ⊙ 𝔽`` alone, ``A = sigmoid(max over channels of x̄)``.

    For a fusion that takes 𝔽's own share from elsewhere: :class:`~kpdiff.LookupInteraction`
    computes it once per clip instead of reading ``[A ⊙ 𝔽, 𝔽]`` at every step. Gradients as
    :func:`lookup_concat`. Meaning: :func:`~kpdiff.kernels.reference.lookup_mask_reference`.

    Args:
        xbar: refined heatmap tokens x̄ ``[B, Cx, h, w]``, floating point, finite, any strides.
        feat: features 𝔽 ``[B, C, h, w]``, floating point, finite, any strides, same device.

    Returns:
        ``[B, C, h, w]`` (contiguous), dtype ``torch.promote_types(xbar.dtype, feat.dtype)``.

    Raises:
        KpdiffInputError: as :func:`lookup_concat`.
    """
    return _lookup(xbar, feat, concat=False)


def _lookup(xbar: torch.Tensor, feat: torch.Tensor, *, concat: bool) -> torch.Tensor:
    sizes = check_shape("xbar", xbar, ("B", None, "h", "w"))
    check_shape("feat", feat, ("B", None, "h", "w"), sizes)
    if xbar.shape[1] == 0:
        raise KpdiffInputError(f"xbar: expected Cx >= 1 channels, got {list(xbar.shape)}")
    check_dtype("xbar", xbar)
    check_dtype("feat", feat)
    _same_device(xbar=xbar, feat=feat)
    _check_all_finite(xbar=xbar, feat=feat)
    return lookup_unchecked(xbar, feat, concat=concat)


def lookup_unchecked(xbar: torch.Tensor, feat: torch.Tensor, *, concat: bool) -> torch.Tensor:
    """:func:`lookup_concat` / :func:`lookup_mask` without the input checks (no sync)."""
    if not use_triton(xbar, feat):
        reference = lookup_concat_reference if concat else lookup_mask_reference
        return reference(xbar, feat)
    from kpdiff.kernels.triton_lookup import Lookup, lookup_forward

    if torch.is_grad_enabled() and (xbar.requires_grad or feat.requires_grad):
        return Lookup.apply(xbar, feat, concat)
    return lookup_forward(xbar, feat, concat=concat)


def ddim_step(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    alpha_t: float | torch.Tensor,
    alpha_prev: float | torch.Tensor,
    *,
    eta: float = 0.0,
    clip_range: float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM update of an x₀-predicting model, as ``DDIMScheduler.step`` computes it.

    ``x_prev = √ᾱ_prev · clip(x̂₀) + √(1 − ᾱ_prev − σ_t²) · ε̂ + σ_t · z`` with
    ``ε̂ = (x_t − √ᾱ_t · x̂₀) / √(1 − ᾱ_t)``; see
    :func:`~kpdiff.kernels.reference.ddim_step_reference`. The scalars are computed in float64
    (diffusers: float32, which loses ~1e-3 at η = 1; see ``ddim_coefficients``). Sampling only:
    no autograd.

    Args:
        x_t: current latent, e.g. an ensemble batch ``[N·B, K, H, W]``, floating point, finite.
        x0_hat: the model's x̂₀, same shape, floating point, finite.
        alpha_t: ᾱ_t, python float or 0-d tensor (a CUDA 0-d tensor costs a sync).
        alpha_prev: ᾱ at the target step (``final_alpha_cumprod`` past t = 0).
        eta: DDIM's η, a finite number ≥ 0. Default ``0.0``.
        clip_range: clip x̂₀ to ``[−r, r]`` (r > 0), ``None`` for no clipping. Default ``None``.
        noise: z ``[same shape]``, floating point, finite, one independent draw per element (so
            per sample of the batch); used only when σ_t > 0. Default ``None``: when σ_t > 0,
            drawn as ``torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)`` on the
            generator's device, then moved to ``x_t``'s (as ``HeatmapDiffusion.ddim_step`` does).
        generator: RNG for z when ``noise`` is ``None``. Default: the global RNG.

    Returns:
        x_prev, shape of ``x_t``, dtype ``torch.promote_types(x_t.dtype, x0_hat.dtype)``.

    Raises:
        KpdiffInputError: wrong shapes or dtypes, NaN/inf in a tensor, ᾱ or η out of range, or
            an update that overflows the output dtype (inputs near its largest value). The
            check costs one device sync, on the output (the inputs are looked at only when it
            fails, to name the culprit).
    """
    if not isinstance(x_t, torch.Tensor):
        raise KpdiffInputError(f"x_t: expected a tensor, got {type(x_t).__name__}")
    check_shape("x0_hat", x0_hat, list(x_t.shape))
    check_dtype("x_t", x_t)
    check_dtype("x0_hat", x0_hat)
    eta = check_number("eta", eta, low=0.0)
    if clip_range is not None:
        clip_range = check_number("clip_range", clip_range, low=0.0, low_open=True)
    check_generator("generator", generator)
    if noise is not None:
        check_shape("noise", noise, list(x_t.shape))
        check_dtype("noise", noise)
    out = _ddim_step_unchecked(
        x_t, x0_hat, alpha_t, alpha_prev, eta=eta, clip_range=clip_range, noise=noise,
        generator=generator,
    )  # fmt: skip
    if out.numel() and not bool(torch.isfinite(out).all()):
        _check_all_finite(x_t=x_t, x0_hat=x0_hat, **({} if noise is None else {"noise": noise}))
        raise KpdiffInputError(
            f"x_t, x0_hat: the DDIM update overflows {out.dtype} (max |x_t| = "
            f"{float(x_t.abs().max()):.3g}, max |x0_hat| = {float(x0_hat.abs().max()):.3g})"
        )
    return out


def _ddim_step_unchecked(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    alpha_t: float | torch.Tensor,
    alpha_prev: float | torch.Tensor,
    *,
    eta: float = 0.0,
    clip_range: float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`ddim_step` without the tensor checks (shapes and devices are still checked)."""
    if x0_hat.shape != x_t.shape:
        raise KpdiffInputError(
            f"x0_hat: expected shape {list(x_t.shape)} (as x_t), got {list(x0_hat.shape)}"
        )
    if noise is None and ddim_coefficients(alpha_t, alpha_prev, eta)[4] > 0:
        gen_device = generator.device if generator is not None else x_t.device
        z = torch.randn(x_t.shape, generator=generator, device=gen_device, dtype=x_t.dtype)
        noise = z.to(x_t.device)
    if noise is not None and noise.shape != x_t.shape:
        raise KpdiffInputError(
            f"noise: expected shape {list(x_t.shape)} (as x_t), got {list(noise.shape)}"
        )
    _same_device(x_t=x_t, x0_hat=x0_hat, **({} if noise is None else {"noise": noise}))
    kwargs: dict[str, Any] = {"eta": eta, "clip_range": clip_range, "noise": noise}
    if not use_triton(x_t, x0_hat):
        return ddim_step_reference(x_t, x0_hat, alpha_t, alpha_prev, **kwargs)
    from kpdiff.kernels.triton_ddim import ddim_step_triton

    return ddim_step_triton(x_t, x0_hat, alpha_t, alpha_prev, **kwargs)


def render_heatmaps(
    keypoints: torch.Tensor,
    visibility: torch.Tensor,
    *,
    heatmap_size: tuple[int, int] = (64, 48),
    stride: float = HEATMAP_STRIDE,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps, exactly as ``GaussianHeatmapCodec.encode`` renders them.

    Meaning: :func:`~kpdiff.kernels.reference.render_heatmaps_reference`. Checking that the
    keypoints are finite costs one device sync.

    Args:
        keypoints: ``[B, K, 2]`` ``(x, y)`` in input pixels, finite, any float or integer dtype
            and strides.
        visibility: ``[B, K]``, any real or bool dtype; a joint is rendered where
            ``visibility > 0``.
        heatmap_size: ``(H, W)``, integers ≥ 1 (integral floats such as ``64.0`` are
            accepted). Default ``(64, 48)``.
        stride: input pixels per heatmap pixel, finite and > 0. Default
            :data:`~kpdiff.strides.HEATMAP_STRIDE` (4).
        sigma: Gaussian std in heatmap pixels, finite and > 0. Default ``2.0``.

    Returns:
        ``heatmaps [B, K, H, W]`` float32 and ``weights [B, K]`` float32 (1 for rendered
        joints, 0 for invisible ones and ones more than 3σ outside the map).

    Raises:
        KpdiffInputError: wrong shapes or dtypes, NaN/inf keypoints, or a bad scalar, named.
    """
    sizes = check_shape("keypoints", keypoints, ("B", "K", 2))
    check_shape("visibility", visibility, ("B", "K"), sizes)
    check_dtype("keypoints", keypoints, "real")
    check_dtype("visibility", visibility, "nocomplex")
    heatmap_size = check_sizes("heatmap_size", heatmap_size, ("H", "W"))
    stride = check_number("stride", stride, low=0.0, low_open=True)
    sigma = check_number("sigma", sigma, low=0.0, low_open=True)
    _same_device(keypoints=keypoints, visibility=visibility)
    check_finite("keypoints", keypoints)
    kwargs: dict[str, Any] = {"heatmap_size": heatmap_size, "stride": stride, "sigma": sigma}
    if not use_triton(keypoints, visibility):
        return render_heatmaps_reference(keypoints, visibility, **kwargs)
    from kpdiff.kernels.triton_render import render_heatmaps_triton

    return render_heatmaps_triton(keypoints, visibility, **kwargs)


def decode_heatmaps(
    heatmaps: torch.Tensor, *, stride: float = HEATMAP_STRIDE, refine: str = "quarter"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints by argmax (+ a quarter-pixel shift), as ``GaussianHeatmapCodec.decode``.

    Meaning: :func:`~kpdiff.kernels.reference.decode_heatmaps_reference`; among equal maxima the
    first in row-major order wins (``torch.max``'s rule). Checking the values costs one device
    sync.

    Args:
        heatmaps: ``[B, K, H, W]`` (``H, W ≥ 1``; ``B`` or ``K`` may be 0), any float dtype and
            strides; finite values within float32's range (they are read as float32).
        stride: input pixels per heatmap pixel, finite and > 0. Default
            :data:`~kpdiff.strides.HEATMAP_STRIDE` (4).
        refine: ``"quarter"`` (default) or ``"none"`` (plain argmax).

    Returns:
        ``keypoints [B, K, 2]`` float32 in input pixels and ``maxvals [B, K]`` float32.

    Raises:
        KpdiffInputError: a wrong rank, an empty map, a non-float dtype, NaN/inf (or float64
            values beyond float32's range), a bad ``stride`` or ``refine``.
    """
    check_shape("heatmaps", heatmaps, (None, None, None, None))
    if not isinstance(refine, str) or refine not in ("quarter", "none"):
        raise KpdiffInputError(f"refine: expected 'quarter' or 'none', got {refine!r:.60}")
    if heatmaps.shape[-1] * heatmaps.shape[-2] == 0:
        raise KpdiffInputError(f"heatmaps: expected H, W >= 1, got {list(heatmaps.shape)}")
    check_dtype("heatmaps", heatmaps)
    stride = check_number("stride", stride, low=0.0, low_open=True)
    check_finite(
        "heatmaps", heatmaps, max_abs=_F32_MAX if heatmaps.dtype == torch.float64 else None
    )
    if not use_triton(heatmaps):
        return decode_heatmaps_reference(heatmaps, stride=stride, refine=refine)
    from kpdiff.kernels.triton_decode import decode_heatmaps_triton

    return decode_heatmaps_triton(heatmaps, stride=stride, refine=refine)


_F32_MAX = float(torch.finfo(torch.float32).max)


def _check_all_finite(**tensors: torch.Tensor) -> None:
    """:func:`~kpdiff.errors.check_finite` on several tensors with one device sync."""
    floats = {n: t for n, t in tensors.items() if t.is_floating_point() and t.numel()}
    if not floats:
        return
    first = next(iter(floats.values()))
    flags = torch.stack([torch.isfinite(t).all().to(first.device) for t in floats.values()])
    if bool(flags.all()):
        return
    for name, t in floats.items():
        check_finite(name, t)


def _same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise KpdiffInputError(f"expected all tensors on one device, got {found}")
