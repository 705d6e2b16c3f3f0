"""Plain torch references: they define what each fused kernel computes.

Each function here is the meaning of one Triton kernel; the kernels are tested against them, and
they are tested against the code they stand for (``GaussianHeatmapCodec``, diffusers'
``DDIMScheduler.step``). They only use torch, so they run anywhere.
"""

from __future__ import annotations

import torch

from kpdiff.errors import KpdiffInputError, check_number, check_sizes
from kpdiff.strides import HEATMAP_STRIDE

__all__ = [
    "ddim_coefficients",
    "ddim_step_reference",
    "decode_heatmaps_reference",
    "lookup_concat_reference",
    "lookup_mask_reference",
    "render_heatmaps_reference",
]


def lookup_concat_reference(xbar: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """The lookup of DiffPose: mask the features with where the heatmap says joints are.

    ``A = sigmoid(max over channels of x̄)`` and the output is the channel concat ``[A ⊙ 𝔽, 𝔽]``.
    Under autograd the gradient w.r.t. x̄ reaches only the channel(s) holding the maximum,
    shared evenly among ties (``torch.amax``'s rule).

    Args:
        xbar: refined heatmap tokens x̄ ``[B, Cx, h, w]``.
        feat: features 𝔽 ``[B, C, h, w]`` of the same batch and spatial size.

    Returns:
        ``[B, 2C, h, w]`` in ``torch.promote_types(xbar.dtype, feat.dtype)``.
    """
    return torch.cat([lookup_mask_reference(xbar, feat), feat], dim=1)


def lookup_mask_reference(xbar: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """The masked half of the lookup alone: ``A ⊙ 𝔽`` with ``A = sigmoid(max over channels of x̄)``.

    What a fusion needs when it takes 𝔽's own contribution from elsewhere (DiffPose computes
    that once per clip, see ``LookupInteraction.feature_term``). Gradients as
    :func:`lookup_concat_reference`.

    Args:
        xbar: refined heatmap tokens x̄ ``[B, Cx, h, w]``.
        feat: features 𝔽 ``[B, C, h, w]`` of the same batch and spatial size.

    Returns:
        ``[B, C, h, w]`` in ``torch.promote_types(xbar.dtype, feat.dtype)``.
    """
    return torch.sigmoid(xbar.amax(dim=1, keepdim=True)) * feat


def ddim_coefficients(
    alpha_t: float | torch.Tensor, alpha_prev: float | torch.Tensor, eta: float = 0.0
) -> tuple[float, float, float, float, float]:
    """The five scalars of one DDIM update, computed in float64 (python floats).

    diffusers computes them in float32, where ``1 − ᾱ_prev − σ_t²`` cancels catastrophically
    at η = 1 (it is ~1e-9 for early steps): its update is then off by up to ~1e-3. Float64
    gives the exact update, as ``HeatmapDiffusion.ddim_step`` computes it; for η < 1 the two
    agree to float32 rounding.

    Args:
        alpha_t: ᾱ_t, a python float or a 0-d tensor, ``0 ≤ ᾱ_t < 1``.
        alpha_prev: ᾱ_prev (ᾱ of the step the update goes to; ``final_alpha_cumprod`` past 0),
            ``ᾱ_t ≤ ᾱ_prev ≤ 1`` and ``ᾱ_prev > 0``.
        eta: DDIM's η ≥ 0. Default ``0.0``.

    Returns:
        ``(√ᾱ_t, √(1 − ᾱ_t), √ᾱ_prev, √(1 − ᾱ_prev − σ_t²), σ_t)`` as python floats, with
        ``σ_t = η · √((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev))`` (DDIM eq. 16); the radicand
        ``1 − ᾱ_prev − σ_t²`` (≥ 0 in exact arithmetic for η ≤ 1) is clamped at 0.

    Raises:
        KpdiffInputError: ᾱ outside those ranges (diffusers would return NaN or inf), or η not a
            finite number ≥ 0.
    """
    eta = check_number("eta", eta, low=0.0)
    a_t = check_number("alpha_t", alpha_t, low=0.0, high=1.0)
    a_prev = check_number("alpha_prev", alpha_prev, low=0.0, high=1.0)
    if not (0.0 <= a_t < 1.0 and 0.0 < a_prev <= 1.0 and a_t <= a_prev):
        raise KpdiffInputError(
            f"alpha_t, alpha_prev: expected 0 <= alpha_t <= alpha_prev <= 1, alpha_t < 1 and "
            f"alpha_prev > 0, got {a_t}, {a_prev}"
        )
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance**0.5
    direction = max(1 - a_prev - std**2, 0.0) ** 0.5
    return a_t**0.5, (1 - a_t) ** 0.5, a_prev**0.5, direction, std


def ddim_step_reference(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    alpha_t: float | torch.Tensor,
    alpha_prev: float | torch.Tensor,
    *,
    eta: float = 0.0,
    clip_range: float | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM update for an x₀-predicting model: ``DDIMScheduler.step(...).prev_sample``.

    As diffusers computes it with ``prediction_type="sample"``, ``clip_sample`` at
    ``clip_range``, no thresholding and ``use_clipped_model_output=False``::

        ε̂ = (x_t − √ᾱ_t · x̂₀) / √(1 − ᾱ_t)                 (from the *unclipped* x̂₀)
        x_prev = √ᾱ_prev · clip(x̂₀) + √(1 − ᾱ_prev − σ_t²) · ε̂ + σ_t · z    (DDIM eq. 12)

    The noise term is added only when σ_t > 0 (diffusers adds it whenever ``eta > 0``; with
    σ_t = 0 that term is 0). Arithmetic is float32 whatever the inputs.

    Args:
        x_t: the current latent ``[*]`` (any shape; an ensemble batch ``[N·B, K, H, W]``).
        x0_hat: the model's x̂₀, same shape.
        alpha_t: ᾱ_t, python float or 0-d tensor.
        alpha_prev: ᾱ at the step the update goes to.
        eta: DDIM's η ≥ 0. Default ``0.0`` (deterministic).
        clip_range: clip x̂₀ to ``[−r, r]``; ``None`` for no clipping. Default ``None``.
        noise: z, same shape as ``x_t``, one draw per element (so per sample); required when
            σ_t > 0 (``eta > 0`` and ᾱ_t < ᾱ_prev < 1). Default ``None``.

    Returns:
        x_prev, shape of ``x_t``, dtype ``torch.promote_types(x_t.dtype, x0_hat.dtype)``.
    """
    c_a, c_b, c_prev, c_dir, std = ddim_coefficients(alpha_t, alpha_prev, eta)
    out_dtype = torch.promote_types(x_t.dtype, x0_hat.dtype)
    x, x0 = x_t.float(), x0_hat.float()
    eps = (x - c_a * x0) / c_b
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    prev = c_prev * x0 + c_dir * eps
    if std > 0:
        if noise is None:
            raise KpdiffInputError("noise: required when eta > 0 (sigma_t > 0), got None")
        prev = prev + std * noise.float()
    return prev.to(out_dtype)


def render_heatmaps_reference(
    keypoints: torch.Tensor,
    visibility: torch.Tensor,
    heatmap_size: tuple[int, int] = (64, 48),
    stride: float = HEATMAP_STRIDE,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps: exactly ``GaussianHeatmapCodec.encode`` (without its checks).

    Pixel-centre convention: heatmap pixel ``(u, v)`` has its centre at input pixel
    ``((u + 0.5)·stride − 0.5, (v + 0.5)·stride − 0.5)``. A joint is rendered (weight 1) when
    ``visibility > 0`` and its heatmap position lies strictly within 3σ of the map
    (``−3σ < u < W − 1 + 3σ``, same for v).

    Args:
        keypoints: ``[B, K, 2]`` ``(x, y)`` in input pixels.
        visibility: ``[B, K]``, any dtype.
        heatmap_size: ``(H, W)``, integers ≥ 1 (integral floats such as ``64.0`` are accepted).
            Default ``(64, 48)``.
        stride: input pixels per heatmap pixel, finite and > 0. Default
            :data:`~kpdiff.strides.HEATMAP_STRIDE` (4).
        sigma: Gaussian std in heatmap pixels, finite and > 0. Default ``2.0``.

    Returns:
        ``heatmaps [B, K, H, W]`` float32 (peak 1, zero where the weight is 0) and
        ``weights [B, K]`` float32.

    Raises:
        KpdiffInputError: ``heatmap_size``, ``stride`` or ``sigma`` out of range (the tensors
            are not checked here: :func:`kpdiff.kernels.render_heatmaps` does).
    """
    h, w = check_sizes("heatmap_size", heatmap_size, ("H", "W"))
    stride = check_number("stride", stride, low=0.0, low_open=True)
    sigma = check_number("sigma", sigma, low=0.0, low_open=True)
    uv = (keypoints.float() + 0.5) / stride - 0.5
    u, v = uv[..., 0, None, None], uv[..., 1, None, None]
    ys = torch.arange(h, device=keypoints.device, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, device=keypoints.device, dtype=torch.float32).view(1, w)
    heatmaps = torch.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))
    reach = 3 * sigma
    inside = (
        (uv[..., 0] > -reach)
        & (uv[..., 0] < w - 1 + reach)
        & (uv[..., 1] > -reach)
        & (uv[..., 1] < h - 1 + reach)
    )
    weights = ((visibility > 0) & inside).float()
    return heatmaps * weights[..., None, None], weights


def decode_heatmaps_reference(
    heatmaps: torch.Tensor, stride: float = HEATMAP_STRIDE, refine: str = "quarter"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax decoding: exactly ``GaussianHeatmapCodec.decode`` with ``refine`` "quarter"/"none".

    The argmax is the first maximum in row-major order (``torch.max``'s documented rule on CPU
    and CUDA). ``"quarter"`` moves it a quarter pixel toward the larger of its two neighbours
    on each axis (none when they are equal); on the map border the missing neighbour counts
    as 0. Coordinates are then mapped to input pixels with the pixel-centre convention.

    Args:
        heatmaps: ``[B, K, H, W]``, any float dtype (read as float32); finite values.
        stride: input pixels per heatmap pixel, finite and > 0. Default
            :data:`~kpdiff.strides.HEATMAP_STRIDE` (4).
        refine: ``"quarter"`` (default) or ``"none"``.

    Returns:
        ``keypoints [B, K, 2]`` float32 ``(x, y)`` in input pixels and ``maxvals [B, K]``
        float32.
    """
    stride = check_number("stride", stride, low=0.0, low_open=True)
    h, w = heatmaps.shape[-2:]
    hm = heatmaps.float()
    maxvals, idx = hm.flatten(2).max(dim=-1)
    u, v = idx % w, idx // w
    coords = torch.stack([u, v], dim=-1).float()
    if refine == "quarter":
        flat = hm.flatten(2)

        def at(du: int, dv: int) -> torch.Tensor:
            i = (v + dv).clamp(0, h - 1) * w + (u + du).clamp(0, w - 1)
            return flat.gather(-1, i.unsqueeze(-1)).squeeze(-1)

        right = torch.where(u < w - 1, at(1, 0), 0.0)  # a missing neighbour counts as 0
        left = torch.where(u > 0, at(-1, 0), 0.0)
        down = torch.where(v < h - 1, at(0, 1), 0.0)
        up = torch.where(v > 0, at(0, -1), 0.0)
        coords = coords + 0.25 * torch.stack([(right - left).sign(), (down - up).sign()], dim=-1)
    elif refine != "none":
        raise KpdiffInputError(f"refine: expected 'quarter' or 'none', got {refine!r}")
    return (coords + 0.5) * stride - 0.5, maxvals
