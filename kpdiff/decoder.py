"""PoseDecoder: DiffPose's denoiser f(x_t, t, 𝔽) → x̂₀, split into a once-per-clip part and a
per-step part.

    prepare(𝔽)            → (𝔽¹, 𝔽², 𝔽³, T¹, T², T³)   step-invariant: the pyramid (deconv
                                                      ×1/×2/×4) and each scale's feature term
                                                      Tʲ = W_𝔽 * 𝔽ʲ (LookupInteraction.feature_term)
    forward(x_t, t, cond) → x̂₀ [B, K, H, W]             once per hypothesis and DDIM step
        x̄_t = x_t ⊙ (1 + γ(t)) + β(t)                   FiLM from a sinusoidal step embedding
        ℱʲ  = LookupInteraction_j(StrideConv_j(x̄_t), 𝔽ʲ)  j = 1 (16×12, Transformer),
                                                             2 (32×24, conv), 3 (64×48, conv)
        x̂₀  = Conv3×3(GELU(Fuse(ℱ¹, ℱ², ℱ³)))

The per-step part is kept light on purpose: at N = 10 hypotheses × 4 steps it runs 40 times per
clip while the encoder runs once, so its widths shrink as resolution grows (128/64/32 by
default: HRNet-W32's widths at 1/16, 1/8 and 1/4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from kpdiff.errors import KpdiffInputError, check_shape
from kpdiff.lookup import FeaturePyramid, Fusion, HeatmapEmbed, LookupInteraction, ScaleFusion
from kpdiff.strides import HEATMAP_STRIDE, PATCH_STRIDE

__all__ = ["DecoderCondition", "PoseDecoder", "StepRescale", "timestep_embedding"]

LookupMode = Literal["full", "low_res", "none"]


class DecoderCondition(NamedTuple):
    """What :meth:`PoseDecoder.prepare` computes from 𝔽 once per clip, for every step and
    hypothesis: a torch pytree (a NamedTuple of tuples of tensors), so
    :func:`~kpdiff.sampling.repeat_cond` and ``tree_map`` reach its tensors.

    Attributes:
        pyramid: 𝔽ʲ, 𝔽 up-sampled ×1/×2/×4 for the n scales, each ``[B, dims_j, h·f_j, w·f_j]``.
        terms: Tʲ, each scale's feature term (𝔽ʲ's share of its fusion), shaped as ``pyramid``.
    """

    pyramid: tuple[torch.Tensor, ...]
    terms: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        """B, the clips it was computed for."""
        return self.pyramid[0].shape[0]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The flat form ``(𝔽¹, …, 𝔽ⁿ, T¹, …, Tⁿ)`` (the exported graphs' inputs and outputs)."""
        return (*self.pyramid, *self.terms)


UP = PATCH_STRIDE // HEATMAP_STRIDE  # 4: heatmap pixels per pixel of 𝔽 (the pyramid's ×4)

# (factor of 𝔽ʲ relative to 𝔽, mixer, lookup) for each scale used by a lookup mode.
SCALES: dict[str, tuple[tuple[int, str, bool], ...]] = {
    "full": ((1, "transformer", True), (2, "conv", True), (4, "conv", True)),  # LMSFI
    "low_res": ((1, "transformer", True),),  # LMSFI at 16×12 only (Table 5: 84.4)
    "none": ((4, "conv", False),),  # "Direct": [x̄_t, 𝔽³] at heatmap size, no lookup (52.5)
}


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Transformer / DDPM): ``[B] → [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return torch.cat([emb, emb.new_zeros(t.shape[0], dim % 2)], dim=-1)


class StepRescale(nn.Module):
    """Rescale the noisy heatmap by its step: x̄_t = x_t ⊙ (1 + γ(t)) + β(t), per keypoint.

    ``(γ, β) = MLP(sinusoid(t))``, the last layer zero-initialised (identity at start). Learning
    γ → −1 at large t lets the decoder discard pure noise and read only 𝔽; at small t it keeps
    x_t. Only K scales and shifts: the heatmap channels are the cheapest place to inject t.

    Args:
        num_keypoints: K.
        dim: width of the step embedding and of the MLP. Default ``128``.

    Shapes: ``x_t [B, K, H, W], t [B] → x̄_t [B, K, H, W]``.
    """

    def __init__(self, num_keypoints: int, *, dim: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 2 * num_keypoints))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(timestep_embedding(t, self.dim)).chunk(2, dim=-1)
        return x_t * (1 + gamma[..., None, None]) + beta[..., None, None]


class PoseDecoder(nn.Module):
    """The Pose-Decoder with Lookup-based Multi-Scale Feature Interaction.

    Args:
        num_keypoints: K. Default ``17``.
        feat_dim: C, the width of 𝔽. Default ``256``.
        dims: widths at 𝔽 ×1, ×2, ×4 (16×12, 32×24, 64×48 for a 256×192 input); the last one
            is also the width of ℱʲ and of the fusion. Default ``(128, 64, 32)``.
        lookup: ``"full"`` (three scales, DiffPose), ``"low_res"`` (16×12 only) or ``"none"``
            (the paper's Direct baseline). Default ``"full"``.
        fusion: ``"sum"`` (default) or ``"concat"``; see :class:`ScaleFusion`.
        depth: layers in each refine / fuse mixer. Default ``1``.
        heads: attention heads of the 16×12 Transformer; must divide ``dims[0]``. Default ``4``.
        mlp_ratio: MLP width of that Transformer × ``dims[0]``. Default ``2.0``.
        time_dim: width of the step embedding. Default ``128``.
        background: initial bias of the output head, the signal value of an empty heatmap
            (DiffPose sets ``-signal_scale`` so that training starts from "no joint"). Default
            ``0.0``.

    Shapes:
        ``prepare: 𝔽 [B, C, h, w] → pyramid``; ``forward: x_t [B, K, 4h, 4w], t [B], pyramid
        → x̂₀ [B, K, 4h, 4w]`` (signal units).
    """

    def __init__(
        self,
        *,
        num_keypoints: int = 17,
        feat_dim: int = 256,
        dims: Sequence[int] = (128, 64, 32),
        lookup: LookupMode = "full",
        fusion: Fusion = "sum",
        depth: int = 1,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        time_dim: int = 128,
        background: float = 0.0,
    ) -> None:
        super().__init__()
        if lookup not in SCALES:
            raise KpdiffInputError(f"lookup: expected one of {list(SCALES)}, got {lookup!r}")
        if len(dims) != 3:
            raise KpdiffInputError(f"dims: expected 3 widths (×1, ×2, ×4), got {tuple(dims)}")
        scales = SCALES[lookup]
        level_dims = [dims[f.bit_length() - 1] for f, _, _ in scales]
        out_dim = dims[-1]
        self.num_keypoints = num_keypoints
        self.factors = tuple(f for f, _, _ in scales)

        self.pyramid = FeaturePyramid(feat_dim, dims=level_dims, factors=self.factors)
        self.rescale = StepRescale(num_keypoints, dim=time_dim)
        self.embeds = nn.ModuleList(
            HeatmapEmbed(num_keypoints, d, stride=UP // f)
            for d, f in zip(level_dims, self.factors, strict=True)
        )
        self.blocks = nn.ModuleList(
            LookupInteraction(
                d,
                out_dim=out_dim,
                upsample=UP // f,
                mixer=mixer,
                lookup=use_lookup,
                depth=depth,
                heads=heads,
                mlp_ratio=mlp_ratio,
            )
            for d, (f, mixer, use_lookup) in zip(level_dims, scales, strict=True)
        )
        self.fusion = ScaleFusion(out_dim, num_scales=len(scales), mode=fusion)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(out_dim, num_keypoints, 3, padding=1))
        nn.init.constant_(self.head[-1].bias, background)

    def prepare(self, feat: torch.Tensor) -> DecoderCondition:
        """The step-invariant part, from 𝔽 ``[B, C, h, w]``: the size-matched pyramid 𝔽ʲ and
        each scale's feature term (𝔽ʲ's share of its block's fusion).

        Returns a :class:`DecoderCondition` ``(pyramid=(𝔽¹, …, 𝔽ⁿ), terms=(T¹, …, Tⁿ))`` for the
        n scales, both ``[B, dims_j, h·f_j, w·f_j]``.
        """
        pyramid = tuple(self.pyramid(feat))
        terms = tuple(block.feature_term(f) for block, f in zip(self.blocks, pyramid, strict=True))
        return DecoderCondition(pyramid, terms)

    def split_condition(self, cond: Any) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
        """``(pyramid, terms)`` of ``cond``: a :class:`DecoderCondition`, its flat form
        ``(𝔽¹, …, 𝔽ⁿ, T¹, …, Tⁿ)``, or the pyramid alone (terms ``None``: computed per step).

        Raises:
            KpdiffInputError: anything else, naming ``cond``.
        """
        n = len(self.blocks)
        if isinstance(cond, DecoderCondition):
            if len(cond.pyramid) == n and len(cond.terms) in (0, n):
                return tuple(cond.pyramid), tuple(cond.terms) or (None,) * n
            found = f"a DecoderCondition of {len(cond.pyramid)} + {len(cond.terms)} tensors"
        else:
            got = len(cond) if isinstance(cond, (tuple, list)) else None
            if got in (n, 2 * n):
                return tuple(cond[:n]), tuple(cond[n:]) if got == 2 * n else (None,) * n
            found = type(cond).__name__ + ("" if got is None else f" of {got} tensors")
        raise KpdiffInputError(
            f"cond: expected the DecoderCondition of PoseDecoder.prepare ({n} + {n} tensors; or "
            f"its flat {2 * n} tensors, or its first {n}, the pyramid), got {found}"
        )

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: DecoderCondition | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """One denoiser evaluation (a :class:`~kpdiff.Denoiser` with ``cond = prepare(𝔽)``).

        Args:
            x_t: noisy heatmaps ``[B, K, H, W]`` in signal units, ``(H, W) = 4 × 𝔽``'s size.
            t: integer steps ``[B]``.
            cond: the :class:`DecoderCondition` of :meth:`prepare` for these B samples, its
                flat form, or the pyramid alone (the feature terms are then computed here).

        Returns:
            x̂₀ ``[B, K, H, W]`` in signal units.
        """
        pyramid, terms = self.split_condition(cond)
        f0, feat0 = self.factors[0], pyramid[0]
        size = (feat0.shape[-2] * UP // f0, feat0.shape[-1] * UP // f0)
        sizes = check_shape("x_t", x_t, (feat0.shape[0], self.num_keypoints, *size))
        check_shape("t", t, (x_t.shape[0],), sizes)
        xbar = self.rescale(x_t, t)  # x̄_t = x_t ⊙ (1 + γ(t)) + β(t)
        outs = [
            block(embed(xbar), feat, term)  # ℱʲ = Up(Fuse(Lookup(x̄ʲ, 𝔽ʲ)))
            for embed, block, feat, term in zip(
                self.embeds, self.blocks, pyramid, terms, strict=True
            )
        ]
        return self.head(self.fusion(outs))  # x̂₀ = Conv3×3(ℱ¹ + ℱ² + ℱ³)
