"""Heatmap codecs: keypoints ⇄ Gaussian heatmaps, flipping, and the diffusion signal range.

Coordinate convention (used everywhere in kpdiff): a keypoint ``(x, y)`` is in input-image pixels
with the origin at the centre of the top-left pixel. Heatmap pixel ``(u, v)`` covers the input
pixels of its ``stride × stride`` cell, so its centre sits at

    x = (u + 0.5) · stride − 0.5,        u = (x + 0.5) / stride − 0.5.

With this convention flipping the input image (``x ↦ W_in − 1 − x``) is exactly flipping the
heatmap array (``u ↦ W − 1 − u``): no one-pixel shift is needed after a flip, unlike HRNet's
integer convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from kpdiff.errors import KpdiffInputError, check_int, check_number, check_shape, check_sizes
from kpdiff.kernels import decode_heatmaps, render_heatmaps
from kpdiff.strides import HEATMAP_STRIDE  # input pixels per heatmap pixel (4), written there

__all__ = [
    "HEATMAP_STRIDE",
    "GaussianHeatmapCodec",
    "SignalRange",
    "flip_heatmaps",
    "flip_keypoints",
]

Refine = Literal["none", "quarter", "dark"]


@dataclass(frozen=True)
class GaussianHeatmapCodec:
    """Unnormalised Gaussian heatmaps (peak 1), the target representation of DiffPose and HRNet.

    Args:
        heatmap_size: ``(H, W)`` of the heatmaps, two integers ≥ 1 (integral floats such as
            ``64.0`` are accepted and stored as ints). Default ``(64, 48)``.
        stride: input pixels per heatmap pixel, a finite number > 0. Default ``4`` (input
            256×192).
        sigma: Gaussian standard deviation in heatmap pixels, a finite number > 0. Default
            ``2.0``.
        refine: sub-pixel refinement in :meth:`decode`: ``"quarter"`` (argmax + a quarter pixel
            toward the larger neighbour, the PoseTrack/HRNet standard; default), ``"dark"``
            (Taylor expansion of the log heatmap, Zhang et al. 2020) or ``"none"`` (plain argmax).
        dark_kernel: size of the Gaussian blur applied before DARK refinement, an odd integer
            ≥ 1. Default ``11``.

    Raises:
        KpdiffInputError: any option out of range, naming it (e.g.
            ``"sigma: expected a finite number > 0, got nan"``).
    """

    heatmap_size: tuple[int, int] = (64, 48)
    stride: float = float(HEATMAP_STRIDE)
    sigma: float = 2.0
    refine: Refine = "quarter"
    dark_kernel: int = 11

    def __post_init__(self) -> None:
        size = check_sizes("heatmap_size", self.heatmap_size, ("H", "W"))
        object.__setattr__(self, "heatmap_size", size)
        for name in ("stride", "sigma"):
            value = check_number(name, getattr(self, name), low=0.0, low_open=True)
            if not isinstance(getattr(self, name), int | float):  # numpy or 0-d tensor
                object.__setattr__(self, name, value)
        if not isinstance(self.refine, str) or self.refine not in ("none", "quarter", "dark"):
            raise KpdiffInputError(
                f"refine: expected 'none', 'quarter' or 'dark', got {self.refine!r:.60}"
            )
        kernel = check_int("dark_kernel", self.dark_kernel, low=1)
        if kernel % 2 == 0:
            raise KpdiffInputError(f"dark_kernel: expected an odd size >= 1, got {kernel}")
        object.__setattr__(self, "dark_kernel", kernel)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H_in, W_in)`` of the input crop the heatmaps describe."""
        h, w = self.heatmap_size
        return round(h * self.stride), round(w * self.stride)

    def to_heatmap_coords(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Input-pixel coordinates ``[..., 2]`` → heatmap-pixel coordinates ``[..., 2]``."""
        return (keypoints + 0.5) / self.stride - 0.5

    def to_input_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Heatmap-pixel coordinates ``[..., 2]`` → input-pixel coordinates ``[..., 2]``."""
        return (coords + 0.5) * self.stride - 0.5

    def encode(
        self, keypoints: torch.Tensor, visibility: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render one Gaussian per keypoint.

        Args:
            keypoints: ``[B, K, 2]`` ``(x, y)`` in input pixels, finite, float or integer dtype.
            visibility: ``[B, K]``, real or bool; a joint is rendered where ``visibility > 0``.

        Returns:
            ``heatmaps [B, K, H, W]`` (float32, peak 1 at the sub-pixel keypoint position, zero
            for absent joints) and ``weights [B, K]`` (1 for rendered joints, 0 for absent ones
            and for joints whose Gaussian lies entirely outside the map, i.e. more than 3σ out).

        Raises:
            KpdiffInputError: wrong shapes or dtypes, NaN/inf keypoints, naming the tensor.
        """
        # One implementation: the torch reference in kpdiff.kernels, or its fused CUDA kernel;
        # render_heatmaps checks shapes, dtypes and finite values under the same names.
        return render_heatmaps(
            keypoints, visibility, heatmap_size=self.heatmap_size, stride=self.stride,
            sigma=self.sigma,
        )  # fmt: skip

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints from heatmaps by argmax plus the configured sub-pixel refinement.

        Args:
            heatmaps: ``[B, K, H, W]`` with ``(H, W) == heatmap_size`` (``B``, ``K`` may be 0),
                floating point, finite.

        Returns:
            ``keypoints [B, K, 2]`` in input pixels and ``maxvals [B, K]`` (the heatmap maximum,
            the usual joint confidence), float32.

        Raises:
            KpdiffInputError: a wrong shape or dtype, NaN/inf values (see
                :func:`kpdiff.kernels.decode_heatmaps`).
        """
        h, w = self.heatmap_size
        check_shape("heatmaps", heatmaps, (None, None, h, w))
        # decode_heatmaps checks the dtype and that the values are finite.
        # Argmax + quarter pixel: kpdiff.kernels (torch reference, or a fused CUDA kernel).
        keypoints, maxvals = decode_heatmaps(
            heatmaps, stride=self.stride, refine="none" if self.refine == "none" else "quarter"
        )
        if self.refine != "dark":
            return keypoints, maxvals
        # DARK: a Newton step on the log heatmap from the argmax, except on the border pixels
        # (no central differences there), which keep the quarter-pixel result.
        hm = heatmaps.float()
        idx = hm.flatten(2).argmax(dim=-1)
        u, v = idx % w, idx // w
        argmax = torch.stack([u, v], dim=-1).float()
        dark = self.to_input_coords(argmax + _dark_offset(hm, idx, self.dark_kernel, self.sigma))
        on_border = ((u == 0) | (u == w - 1) | (v == 0) | (v == h - 1)).unsqueeze(-1)
        return torch.where(on_border, keypoints, dark), maxvals


def _gather_at(hm: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``hm[b, k, v, u]`` for integer index tensors ``u, v`` of shape ``[B, K]`` (clamped)."""
    h, w = hm.shape[-2:]
    flat_idx = v.clamp(0, h - 1) * w + u.clamp(0, w - 1)
    return hm.flatten(2).gather(-1, flat_idx.unsqueeze(-1)).squeeze(-1)


def _dark_offset(hm: torch.Tensor, idx: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """DARK refinement: offset ``−H⁻¹ ∇`` of the log heatmap at the argmax, ``[B, K, 2]``.

    The heatmap is blurred with a Gaussian (size ``kernel``, std ``sigma``) rescaled to its
    original maximum, then ``log``-ed; gradient and Hessian use central differences. Within
    ``kernel // 2`` pixels of the border the blur would be truncated and would bias the maximum,
    so there the unblurred heatmap is used. (The border pixels themselves are left to the
    quarter-pixel rule by :meth:`GaussianHeatmapCodec.decode`.)
    """
    b, k, h, w = hm.shape
    radius = kernel // 2
    t = torch.arange(kernel, device=hm.device, dtype=hm.dtype) - radius
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = hm.reshape(b * k, 1, h, w)
    blurred = F.conv2d(F.pad(x, (radius, radius, 0, 0)), g.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius)), g.view(1, 1, -1, 1))
    peak = x.amax(dim=(-2, -1), keepdim=True)
    # The ratio first: blurred · peak overflows float32 for peaks beyond ~1e19.
    blurred = blurred * (peak / blurred.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-10))

    u, v = idx % w, idx // w
    interior = (u >= radius) & (u < w - radius) & (v >= radius) & (v < h - radius)
    offset_blurred = _taylor_offset(blurred.reshape(b, k, h, w).clamp_min(1e-10).log(), u, v)
    offset_raw = _taylor_offset(hm.clamp_min(1e-10).log(), u, v)
    return torch.where(interior.unsqueeze(-1), offset_blurred, offset_raw)


def _taylor_offset(logh: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Newton step ``−H⁻¹ ∇`` of ``logh [B, K, H, W]`` at integer ``(u, v)``, ``[B, K, 2]``."""

    def at(du: int, dv: int) -> torch.Tensor:
        return _gather_at(logh, u + du, v + dv)

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = at(1, 0) - 2 * c + at(-1, 0)
    dyy = at(0, 1) - 2 * c + at(0, -1)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (dxx < 0) & (det > 1e-12)  # a proper maximum; otherwise no offset
    safe_det = torch.where(ok, det, torch.ones_like(det))
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(dxx * dy - dxy * dx) / safe_det
    offset = torch.stack([off_x, off_y], dim=-1).clamp(-1.0, 1.0)
    ok = ok & torch.isfinite(offset).all(dim=-1)  # overflowing differences: no offset
    return torch.where(ok.unsqueeze(-1), offset, torch.zeros_like(offset))


def flip_heatmaps(heatmaps: torch.Tensor, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror heatmaps left–right and swap the channels of each left/right joint pair.

    Args:
        heatmaps: ``[B, K, H, W]``.
        flip_pairs: joint index pairs to swap, e.g. PoseTrack's ``((3, 4), (5, 6), …)``.

    Returns:
        ``[B, K, H, W]``; with kpdiff's pixel-centre convention this matches
        :func:`flip_keypoints` exactly, no shift needed.
    """
    check_shape("heatmaps", heatmaps, (None, "K", None, None))
    return heatmaps.flip(-1)[:, _flip_permutation(heatmaps.shape[1], flip_pairs)]


def flip_keypoints(
    keypoints: torch.Tensor, width: float, flip_pairs: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Mirror keypoints ``[B, K, C]`` (``C ≥ 2``, x first) in an image ``width`` pixels wide.

    ``x ↦ width − 1 − x`` and the joints of each pair are swapped; further columns (visibility,
    scores) travel with their joint.
    """
    check_shape("keypoints", keypoints, (None, "K", None))
    out = keypoints[:, _flip_permutation(keypoints.shape[1], flip_pairs)].clone()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def _flip_permutation(num_keypoints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        if not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
            raise KpdiffInputError(
                f"flip_pairs: pair ({a}, {b}) is out of range for K = {num_keypoints} joints"
            )
        perm[a], perm[b] = b, a
    return perm


@dataclass(frozen=True)
class SignalRange:
    """The affine map between heatmap values in ``[0, 1]`` and the diffusion signal range.

    ``x = (2h − 1) · scale`` puts the empty background at ``−scale`` and a peak at ``+scale``,
    so the signal uses the whole ``[−scale, scale]`` interval that the scheduler clips to
    (DiffusionDet does the same for boxes).

    Args:
        scale: half-width of the signal range. Default ``2.0`` (DiffusionDet's choice: a larger
            scale keeps more of x₀ visible at a given noise level, which helps a conditional
            model that mostly reads its condition).
    """

    scale: float = 2.0

    def __post_init__(self) -> None:
        check_number("scale", self.scale, low=0.0, low_open=True)

    def to_signal(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Heatmap values (``[0, 1]``) → signal values (``[−scale, scale]``), any shape."""
        return (2.0 * heatmaps - 1.0) * self.scale

    def from_signal(self, signal: torch.Tensor) -> torch.Tensor:
        """Signal values → heatmap values (the inverse of :meth:`to_signal`), any shape."""
        return (signal / self.scale + 1.0) * 0.5
