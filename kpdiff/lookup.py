"""Lookup-based Multi-Scale Feature Interaction (LMSFI), the core of DiffPose's Pose-Decoder.

At scale j the decoder holds a size-matched pair ⟨𝔽ʲ, x̄ʲ⟩: the condition 𝔽 up-sampled by
deconvolution (×1/×2/×4, :class:`FeaturePyramid`, step-invariant, once per clip) and the
rescaled noisy heatmap x̄_t brought down to the same size by a strided convolution
(:class:`HeatmapEmbed`). One :class:`LookupInteraction` block then computes

    x̄ʲ ← Refine(x̄ʲ)                      (Transformer at the lowest scale, conv above)
    Aʲ  = sigmoid(max_c x̄ʲ)               the lookup mask: where the heatmap says joints are
    ℱʲ  = Up(Fuse([Aʲ ⊙ 𝔽ʲ, 𝔽ʲ]))        ([·, ·] = channel concat)

and :class:`ScaleFusion` merges ℱ¹…ℱ³ at heatmap resolution (sum, or concat + 1×1 conv: the
paper's Table 5 variant). Every block works on its own on any ``[B, C, h, w]`` sizes.

Fuse's first layer is linear in its input channels, so on the concat it splits into
``W_A * (Aʲ ⊙ 𝔽ʲ) + W_𝔽 * 𝔽ʲ``. The second term depends on 𝔽ʲ alone:
:meth:`LookupInteraction.feature_term` computes it once per clip (``PoseDecoder.prepare``),
and each step computes only the first (with ``kpdiff.kernels.lookup_mask``). The concat is
never built. This is the same function, up to float rounding, at about a fifth fewer FLOPs per
decoder step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import nn

from kpdiff.errors import KpdiffInputError, check_shape
from kpdiff.kernels import lookup_unchecked

__all__ = [
    "ConvMixer",
    "FeaturePyramid",
    "HeatmapEmbed",
    "LookupInteraction",
    "ScaleFusion",
    "TokenMixer",
]


def lookup_mask(xbar: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """:func:`kpdiff.kernels.lookup_mask` (the same dispatch) without its input checks.

    The blocks call it at every step on activations, not user input: no device sync for a
    finiteness check, and an fp16 overflow under autocast is left to the training loop.
    """
    return lookup_unchecked(xbar, feat, concat=False)


Mixer = Literal["transformer", "conv"]
Fusion = Literal["sum", "concat"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 2 channels: batch-size independent, so the N
    hypotheses of an ensemble (one batch) never influence each other."""
    groups = next(g for g in (8, 4, 2, 1) if (channels % g == 0 and channels >= 2 * g) or g == 1)
    return nn.GroupNorm(groups, channels)


class ConvMixer(nn.Module):
    """3×3 conv → GroupNorm → GELU, residual when ``in_dim == out_dim``.

    Args:
        in_dim: input channels.
        out_dim: output channels. Default: ``in_dim``.
        depth: number of conv layers (≥ 1). Default ``1``.

    Shapes: ``[B, in_dim, h, w] → [B, out_dim, h, w]``.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, *, depth: int = 1) -> None:
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        dims = [in_dim] + [out_dim] * depth
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), group_norm(b), nn.GELU())
            for a, b in itertools.pairwise(dims)
        )

    @property
    def input_linear(self) -> nn.Conv2d:
        """The first operation on the input: the first layer's 3×3 conv (no bias)."""
        return self.layers[0][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        x = x + first(x) if first[0].in_channels == first[0].out_channels else first(x)
        return self._later_layers(x)

    def forward_from_input_linear(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`forward` after :attr:`input_linear` (for ``in_dim != out_dim``,
        where the first layer has no residual): ``forward(x) == forward_from_input_linear(
        input_linear(x))``."""
        return self._later_layers(self.layers[0][1:](h))

    def _later_layers(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[1:]:  # out_dim → out_dim: residual
            x = x + layer(x)
        return x


class TokenMixer(nn.Module):
    """Pre-LN Transformer over the h·w tokens of a feature map.

    Position comes from a depthwise 3×3 conv added to the tokens (a conditional position
    encoding, Chu et al. 2021), so the block works at any ``(h, w)`` without a fixed table.

    Args:
        in_dim: input channels.
        out_dim: token width (a 1×1 conv maps ``in_dim`` to it when they differ). Default:
            ``in_dim``.
        depth: Transformer layers (≥ 1). Default ``1``.
        heads: attention heads; must divide ``out_dim``. Default ``4``.
        mlp_ratio: MLP hidden width × ``out_dim``. Default ``2.0``.

    Shapes: ``[B, in_dim, h, w] → [B, out_dim, h, w]``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        *,
        depth: int = 1,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        if out_dim % heads:
            raise KpdiffInputError(f"heads: must divide the width {out_dim}, got {heads}")
        self.proj = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        self.pos = nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim)
        self.blocks = nn.Sequential(
            *(Block(out_dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(out_dim)

    @property
    def input_linear(self) -> nn.Module:
        """The first operation on the input: the 1×1 projection (``Identity`` when
        ``in_dim == out_dim``)."""
        return self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_input_linear(self.proj(x))

    def forward_from_input_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`forward` after :attr:`input_linear`."""
        x = x + self.pos(x)
        h, w = x.shape[-2:]
        x = self.norm(self.blocks(rearrange(x, "b c h w -> b (h w) c")))
        return rearrange(x, "b (h w) c -> b c h w", h=h, w=w)


def make_mixer(
    kind: Mixer, in_dim: int, out_dim: int, *, depth: int, heads: int, mlp_ratio: float
) -> nn.Module:
    """A :class:`TokenMixer` (``"transformer"``) or :class:`ConvMixer` (``"conv"``)."""
    if kind == "transformer":
        return TokenMixer(in_dim, out_dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio)
    if kind == "conv":
        return ConvMixer(in_dim, out_dim, depth=depth)
    raise KpdiffInputError(f"mixer: expected 'transformer' or 'conv', got {kind!r}")


class LookupInteraction(nn.Module):
    """One scale of LMSFI: refine x̄ʲ, look 𝔽ʲ up through Aʲ = sigmoid(max_c x̄ʲ), fuse, upsample.

    Args:
        dim: width of x̄ʲ and 𝔽ʲ at this scale.
        out_dim: width of the output ℱʲ. Default: ``dim``.
        upsample: integer factor from this scale to the output resolution. Default ``1``.
        mixer: ``"transformer"`` (the paper's choice at the lowest resolution, 16×12) or
            ``"conv"`` (32×24 and 64×48). Default ``"conv"``.
        depth: layers of each mixer (refine and fuse). Default ``1``.
        heads: attention heads (transformer mixer). Default ``4``.
        mlp_ratio: MLP width × ``dim`` (transformer mixer). Default ``2.0``.
        lookup: ``False`` gives the paper's "Direct" interaction: no refinement, no mask, the
            heatmap tokens are concatenated with the features, ``[x̄ʲ, 𝔽ʲ]``. Default ``True``.

    Fuse's first layer is applied to the two halves of its input separately (see the module
    docstring): :meth:`feature_term` is 𝔽ʲ's half, step-invariant, and ``forward`` takes it
    precomputed or computes it.

    Shapes: ``xbar [B, dim, h, w]``, ``feat [B, dim, h, w] → ℱʲ [B, out_dim, h·s, w·s]``.
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        upsample: int = 1,
        mixer: Mixer = "conv",
        depth: int = 1,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        lookup: bool = True,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        if not isinstance(upsample, int) or upsample < 1:
            raise KpdiffInputError(f"upsample: expected an integer >= 1, got {upsample!r}")
        kw = dict(depth=depth, heads=heads, mlp_ratio=mlp_ratio)
        self.dim, self.upsample, self.lookup = dim, upsample, lookup
        self.refine = make_mixer(mixer, dim, dim, **kw) if lookup else nn.Identity()
        self.fuse = make_mixer(mixer, 2 * dim, dim, **kw)
        self.out = nn.Conv2d(dim, out_dim, 1)

    def feature_term(self, feat: torch.Tensor) -> torch.Tensor:
        """𝔽ʲ's share of Fuse's first layer, ``W_𝔽 * 𝔽ʲ`` (with that layer's bias, if any).

        It depends on 𝔽ʲ alone: compute it once per clip and pass it to :meth:`forward` at
        every step and for every hypothesis.

        Shapes: ``feat [B, dim, h, w] → [B, dim, h, w]``.
        """
        check_shape("feat", feat, (None, self.dim, None, None))
        return self._fuse_input(feat, half=1, bias=True)

    def forward(
        self, xbar: torch.Tensor, feat: torch.Tensor, feature_term: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ℱʲ from ``xbar [B, dim, h, w]`` and ``feat [B, dim, h, w]``; ``feature_term`` is
        :meth:`feature_term` of ``feat`` (``[B, dim, h, w]``), computed here when ``None``."""
        sizes = check_shape("xbar", xbar, ("B", self.dim, "h", "w"))
        check_shape("feat", feat, ("B", self.dim, "h", "w"), sizes)
        if feature_term is None:
            feature_term = self.feature_term(feat)
        check_shape("feature_term", feature_term, ("B", self.dim, "h", "w"), sizes)
        if self.lookup:
            xbar = self.refine(xbar)  # x̄ʲ ← Refine(x̄ʲ)
            part = lookup_mask(xbar, feat)  # Aʲ ⊙ 𝔽ʲ, Aʲ = sigmoid(max_c x̄ʲ)
        else:
            part = xbar  # Direct: Fuse([x̄ʲ, 𝔽ʲ])
        # Fuse([part, 𝔽ʲ]) with its first layer split: W_part * part + W_𝔽 * 𝔽ʲ
        x = self.fuse.forward_from_input_linear(self._fuse_input(part, half=0) + feature_term)
        x = self.out(x)  # to the output width (cheaper before Up)
        if self.upsample > 1:  # ℱʲ = Up(·)
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return x

    def _fuse_input(self, x: torch.Tensor, *, half: int, bias: bool = False) -> torch.Tensor:
        """Fuse's first layer on one half of its input channels (0: the masked or heatmap
        half, 1: 𝔽ʲ's half)."""
        conv = self.fuse.input_linear
        weight = conv.weight[:, half * self.dim : (half + 1) * self.dim]
        return F.conv2d(
            x, weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation
        )


def deconv_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """×2 transposed conv (kernel 4, stride 2, SimpleBaseline's) → GroupNorm → GELU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_dim, out_dim, 4, stride=2, padding=1, bias=False),
        group_norm(out_dim),
        nn.GELU(),
    )


class FeaturePyramid(nn.Module):
    """The size-matched pyramid 𝔽ʲ: 𝔽 deconvolved ×1 / ×2 / ×4 (step-invariant: once per clip).

    ×1 is a 1×1 conv; ×2ⁿ is n transposed-conv blocks.

    Args:
        in_dim: C, the width of 𝔽.
        dims: width of each level. Default ``(128, 64, 32)``.
        factors: up-sampling factor of each level, powers of 2. Default ``(1, 2, 4)``.

    Shapes: ``𝔽 [B, C, h, w] → (𝔽ʲ [B, dims[j], h·f_j, w·f_j] for each j)``.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        dims: Sequence[int] = (128, 64, 32),
        factors: Sequence[int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if len(dims) != len(factors) or not dims:
            raise KpdiffInputError(
                f"dims/factors: expected equal lengths >= 1, got {dims}, {factors}"
            )
        self.in_dim, self.dims, self.factors = in_dim, tuple(dims), tuple(factors)
        levels = []
        for dim, factor in zip(dims, factors, strict=True):
            if factor < 1 or factor & (factor - 1):
                raise KpdiffInputError(f"factors: expected powers of 2, got {tuple(factors)}")
            n = factor.bit_length() - 1
            if n == 0:
                levels.append(nn.Sequential(nn.Conv2d(in_dim, dim, 1), group_norm(dim), nn.GELU()))
            else:
                widths = [in_dim] + [max(dim, in_dim // 2**i) for i in range(1, n)] + [dim]
                levels.append(
                    nn.Sequential(*(deconv_block(a, b) for a, b in itertools.pairwise(widths)))
                )
        self.levels = nn.ModuleList(levels)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_shape("feat", feat, (None, self.in_dim, None, None))
        return tuple(level(feat) for level in self.levels)


class HeatmapEmbed(nn.Module):
    """The strided conv that brings x̄_t [B, K, H, W] to the size of one pyramid level.

    Stride s > 1 is a patchifying conv (kernel s, stride s); s = 1 is a 3×3 conv.

    Args:
        num_keypoints: K.
        dim: output width.
        stride: down-sampling factor. Default ``1``.

    Shapes: ``[B, K, H, W] → [B, dim, H/s, W/s]``.
    """

    def __init__(self, num_keypoints: int, dim: int, *, stride: int = 1) -> None:
        super().__init__()
        self.num_keypoints, self.stride = num_keypoints, stride
        if stride == 1:
            self.conv = nn.Conv2d(num_keypoints, dim, 3, padding=1)
        else:
            self.conv = nn.Conv2d(num_keypoints, dim, stride, stride=stride)

    def forward(self, xbar: torch.Tensor) -> torch.Tensor:
        check_shape("xbar", xbar, (None, self.num_keypoints, None, None))
        return self.conv(xbar)


class ScaleFusion(nn.Module):
    """Merge the per-scale outputs ℱ¹…ℱⁿ (same shape) into one map.

    Args:
        dim: width of each ℱʲ.
        num_scales: n. Default ``3``.
        mode: ``"sum"`` (ℱ¹ + ℱ² + ℱ³, DiffPose; default) or ``"concat"`` (channel concat +
            1×1 conv, the paper's Table 5 alternative).

    Shapes: ``n × [B, dim, H, W] → [B, dim, H, W]``.
    """

    def __init__(self, dim: int, *, num_scales: int = 3, mode: Fusion = "sum") -> None:
        super().__init__()
        if mode not in ("sum", "concat"):
            raise KpdiffInputError(f"fusion: expected 'sum' or 'concat', got {mode!r}")
        self.mode, self.num_scales = mode, num_scales
        self.proj = nn.Conv2d(num_scales * dim, dim, 1) if mode == "concat" else None

    def forward(self, outs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(outs) != self.num_scales:
            raise KpdiffInputError(f"outs: expected {self.num_scales} maps, got {len(outs)}")
        if self.proj is None:
            return sum(outs[1:], outs[0])  # ℱ = Σ_j ℱʲ
        return self.proj(torch.cat(list(outs), dim=1))  # ℱ = Conv1×1([ℱ¹, ℱ², ℱ³])
