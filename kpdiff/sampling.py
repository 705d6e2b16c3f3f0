"""EnsembleSampler: N noise groups denoised as one batch, aggregated and decoded.

DiffPose averages N = 10 hypotheses, each started from its own noise. The condition (the
encoder's features) does not depend on the noise, so it is computed once per clip and only
*repeated* N times along the batch; the N hypotheses then run through the reverse process
together as one batch of N·B samples (in chunks when memory is bounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils._pytree import tree_map

from kpdiff.codecs import GaussianHeatmapCodec
from kpdiff.diffusion import Denoiser, HeatmapDiffusion, device_of
from kpdiff.errors import (
    KpdiffInputError,
    check_dtype,
    check_finite,
    check_generator,
    check_int,
    check_number,
    check_shape,
    check_sizes,
)

__all__ = ["EnsembleResult", "EnsembleSampler", "repeat_cond"]

Aggregate = Literal["mean", "median"]
_F32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class EnsembleResult:
    """What :class:`EnsembleSampler` returns for a batch of B samples with N hypotheses.

    Attributes:
        heatmaps: aggregated heatmaps ``[B, K, H, W]`` (heatmap units).
        keypoints: keypoints decoded from the aggregated heatmaps, ``[B, K, 2]`` input pixels.
        scores: heatmap maxima at those keypoints, ``[B, K]``.
        spread: per-joint spread of the N decoded hypotheses, ``[B, K]`` input pixels: the root
            mean square distance of each hypothesis' keypoint to their mean. 0 when all agree.
        hypothesis_keypoints: each hypothesis decoded on its own, ``[N, B, K, 2]``.
        hypotheses: the N hypotheses' heatmaps ``[N, B, K, H, W]`` when ``keep_hypotheses``,
            else ``None``.
    """

    heatmaps: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor
    spread: torch.Tensor
    hypothesis_keypoints: torch.Tensor
    hypotheses: torch.Tensor | None = None


def repeat_cond(cond: Any, n: int) -> Any:
    """Repeat every tensor in ``cond`` n times along dim 0: ``[B, …] → [n·B, …]``.

    Index ``i·B + b`` holds sample b, so hypothesis i of the batch is the slice
    ``[i·B:(i+1)·B]``. Non-tensor leaves are passed through unchanged.
    """
    if n == 1:
        return cond
    return tree_map(
        lambda x: x.repeat(n, *([1] * (x.dim() - 1))) if isinstance(x, torch.Tensor) else x,
        cond,
    )


class EnsembleSampler:
    """Sample N hypotheses per input as one batch, aggregate them and decode keypoints.

    Args:
        diffusion: the :class:`HeatmapDiffusion` that runs the reverse process.
        codec: decodes heatmaps into keypoints. Default ``GaussianHeatmapCodec()``.
        num_samples: N, hypotheses per input. Default ``10`` (DiffPose).
        steps: denoiser evaluations per hypothesis. Default ``4`` (DiffPose).
        aggregate: ``"mean"`` (DiffPose; default) or ``"median"`` (elementwise median of the
            N heatmaps — for even N the lower of the two middle values).
        chunk_size: at most this many hypotheses run at once (bounds memory to
            ``chunk_size · B`` samples); ``None`` runs all N together. Default ``None``.
        eta: DDIM's η, a finite number ≥ 0. Default ``0.0``.
        renew: between steps, replace each hypothesis' x̂₀ by clean Gaussians rendered at its
            decoded joints, with the decoded peak height (the analogue of DiffusionDet's box
            renewal): the next step then sees an x_t like those of training instead of a
            blurred average. No effect with one step. Default ``False``.

    ``num_samples`` and ``steps`` can be overridden per call: no retraining is involved.

    Raises:
        KpdiffInputError: an option of the wrong type or out of range, naming it.
    """

    def __init__(
        self,
        diffusion: HeatmapDiffusion,
        codec: GaussianHeatmapCodec | None = None,
        *,
        num_samples: int = 10,
        steps: int = 4,
        aggregate: Aggregate = "mean",
        chunk_size: int | None = None,
        eta: float = 0.0,
        renew: bool = False,
    ) -> None:
        if not isinstance(diffusion, HeatmapDiffusion):
            raise KpdiffInputError(
                f"diffusion: expected a HeatmapDiffusion, got {type(diffusion).__name__}"
            )
        if codec is not None and not isinstance(codec, GaussianHeatmapCodec):
            raise KpdiffInputError(
                f"codec: expected a GaussianHeatmapCodec or None, got {type(codec).__name__}"
            )
        self.diffusion = diffusion
        self.codec = codec if codec is not None else GaussianHeatmapCodec()
        self.num_samples = _check_positive("num_samples", num_samples)
        self.steps = _check_positive("steps", steps)
        if chunk_size is not None:
            chunk_size = _check_positive("chunk_size", chunk_size)
        if not isinstance(aggregate, str) or aggregate not in ("mean", "median"):
            raise KpdiffInputError(f"aggregate: expected 'mean' or 'median', got {aggregate!r:.60}")
        if not isinstance(renew, bool):
            raise KpdiffInputError(f"renew: expected True or False, got {renew!r:.60}")
        self.aggregate = aggregate
        self.chunk_size = chunk_size
        self.eta = check_number("eta", eta, low=0.0)
        self.renew = renew

    def renew_x0(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """Clean Gaussians at the decoded joints of ``x0_hat [B, K, H, W]`` (signal units), each
        scaled to its decoded peak height (clamped to ``[0, 1]``); same shape, signal units."""
        signal = self.diffusion.signal
        heatmaps = signal.from_signal(x0_hat.float().clamp(-signal.scale, signal.scale))
        keypoints, peaks = self.codec.decode(heatmaps)
        clean, _ = self.codec.encode(keypoints, torch.ones_like(peaks))
        return signal.to_signal(clean * peaks.clamp(0, 1)[..., None, None])

    @torch.no_grad()
    def __call__(
        self,
        denoiser: Denoiser,
        cond: Any,
        shape: tuple[int, ...] | torch.Size,
        *,
        num_samples: int | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        keep_hypotheses: bool = False,
    ) -> EnsembleResult:
        """Denoise N hypotheses for each of the B inputs and aggregate them.

        Args:
            denoiser: the model, a :class:`~kpdiff.Denoiser`.
            cond: its condition for the B inputs (computed once; repeated, not recomputed);
                its tensors must be finite.
            shape: ``(B, K, H, W)``, integers ≥ 1; ``(H, W)`` must equal the codec's heatmap
                size.
            num_samples: N for this call, an integer ≥ 1. Default: the sampler's.
            steps: steps for this call, an integer ≥ 1. Default: the sampler's.
            generator: RNG, a ``torch.Generator``; the same seed gives the same result.
                Default: the global RNG.
            keep_hypotheses: also return the N heatmaps. Default ``False``.

        Returns:
            An :class:`EnsembleResult`.

        Raises:
            KpdiffInputError: an argument out of range, or a denoiser output that is not
                finite (see :meth:`HeatmapDiffusion.sample`).
        """
        n = _check_positive("num_samples", self.num_samples if num_samples is None else num_samples)
        steps = _check_positive("steps", self.steps if steps is None else steps)
        check_generator("generator", generator)
        shape = check_sizes("shape", shape, ("B", "K", "H", "W"))
        if tuple(shape[2:]) != tuple(self.codec.heatmap_size):
            raise KpdiffInputError(
                f"shape: expected (B, K, {self.codec.heatmap_size[0]}, "
                f"{self.codec.heatmap_size[1]}) to match the codec, got {shape}"
            )
        b = shape[0]
        # All starting noise is drawn up front, so chunking does not change the result.
        x_T = torch.randn((n * b, *shape[1:]), generator=generator, device=device_of(cond))
        chunk = n if self.chunk_size is None else min(self.chunk_size, n)
        cond_chunk = repeat_cond(cond, chunk)
        parts = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            c = cond_chunk if m == chunk else repeat_cond(cond, m)
            x = self.diffusion.sample(
                denoiser,
                c,
                (m * b, *shape[1:]),
                steps=steps,
                generator=generator,
                eta=self.eta,
                noise=x_T[start * b : (start + m) * b],
                renew=self.renew_x0 if self.renew else None,
            )
            parts.append(x.view(m, *shape))
        hyps = torch.cat(parts, dim=0)  # [N, B, K, H, W]
        return self.aggregate_hypotheses(hyps, keep_hypotheses=keep_hypotheses)

    def aggregate_hypotheses(
        self, hypotheses: torch.Tensor, *, keep_hypotheses: bool = False
    ) -> EnsembleResult:
        """Aggregate ``[N, B, K, H, W]`` hypothesis heatmaps and decode them.

        Exposed so that hypotheses produced elsewhere (another sampler, a sweep) are
        aggregated and scored exactly as :meth:`__call__` does.

        Args:
            hypotheses: ``[N, B, K, H, W]`` heatmaps, N ≥ 1, ``(H, W)`` the codec's size,
                floating point, finite and within float32's range (``B`` or ``K`` may be 0:
                empty results).
            keep_hypotheses: also return them in the result. Default ``False``.

        Raises:
            KpdiffInputError: a wrong shape or dtype, N = 0 or NaN/inf values.
        """
        h, w = self.codec.heatmap_size
        check_shape("hypotheses", hypotheses, ("N", "B", "K", h, w))
        if hypotheses.shape[0] < 1:
            raise KpdiffInputError(
                f"hypotheses: expected N >= 1 hypotheses, got N = 0: {list(hypotheses.shape)}"
            )
        check_dtype("hypotheses", hypotheses)
        # decoded as float32: float64 values beyond its range would come back as inf
        wide = hypotheses.dtype == torch.float64
        check_finite("hypotheses", hypotheses, max_abs=_F32_MAX if wide else None)
        n, b, k, h, w = hypotheses.shape
        if self.aggregate == "mean":
            heatmaps = hypotheses.mean(dim=0)
        else:
            heatmaps = hypotheses.median(dim=0).values
        keypoints, scores = self.codec.decode(heatmaps)
        hyp_kp, _ = self.codec.decode(hypotheses.reshape(n * b, k, h, w))
        hyp_kp = hyp_kp.view(n, b, k, 2)
        centre = hyp_kp.mean(dim=0, keepdim=True)
        spread = (hyp_kp - centre).pow(2).sum(-1).mean(0).sqrt()
        return EnsembleResult(
            heatmaps=heatmaps,
            keypoints=keypoints,
            scores=scores,
            spread=spread,
            hypothesis_keypoints=hyp_kp,
            hypotheses=hypotheses if keep_hypotheses else None,
        )


def _check_positive(name: str, value: int) -> int:
    return check_int(name, value, low=1)
