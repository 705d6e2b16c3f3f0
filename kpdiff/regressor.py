"""HeatmapRegressor: the non-diffusion control for DiffPose (SimpleBaseline-style, one pass).

    clips [B, 2δ+1, 3, H, W] ──SpatioTemporalEncoder──► 𝔽 [B, C, H/16, W/16]
    𝔽 ──two transposed-conv blocks (×4, FeaturePyramid)──► 1×1 conv ──► heatmaps [B, K, H/4, W/4]
    heatmaps ──GaussianHeatmapCodec.decode──► keypoints [B, K, 2] (crop pixels)

The same encoder as :class:`~kpdiff.DiffPose` (same :class:`~kpdiff.DiffPoseConfig`), the same
targets and the same per-joint weighted MSE, but no noise, no steps and no ensemble: what a
reader compares DiffPose with to see what diffusion adds (the ensemble, the steps, the spread)
and what it costs. It is a :class:`~kpdiff.engine.TrainablePoseModel`, so ``train(config,
model=HeatmapRegressor(...))`` and ``evaluate_model`` take it as they take DiffPose; the
``num_samples`` and ``steps`` of ``predict`` are accepted and ignored, and its spread is 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kpdiff.diffpose import PretrainedMixin, build_encoder
from kpdiff.diffpose_config import DiffPoseConfig
from kpdiff.errors import KpdiffInputError, check_finite, check_shape
from kpdiff.lookup import FeaturePyramid
from kpdiff.sampling import EnsembleResult

__all__ = ["HeatmapRegressor"]


class HeatmapRegressor(PretrainedMixin):
    """DiffPose's encoder with a single-pass heatmap head.

    ``HeatmapRegressor(DiffPoseConfig)`` or ``HeatmapRegressor.from_preset("diffpose-tiny")``;
    of the config it uses the encoder's options, ``num_keypoints``, ``input_size``, ``sigma``,
    ``refine`` and ``decoder_dims[1]`` (the head's width); the diffusion options are ignored.
    """

    def __init__(self, config: DiffPoseConfig | None = None, /, **overrides: Any) -> None:
        super().__init__()
        c = self.config = (config or DiffPoseConfig()).replace(**overrides)
        self.encoder = build_encoder(c)
        width = c.decoder_dims[1]
        self.upsample = FeaturePyramid(c.dim, dims=(width,), factors=(4,))
        self.head = nn.Conv2d(width, c.num_keypoints, 1)
        self.codec = c.codec()

    @classmethod
    def from_preset(cls, name: str, /, **overrides: Any) -> HeatmapRegressor:
        """The regressor with the encoder of a :data:`~kpdiff.PRESETS` entry."""
        from kpdiff.diffpose_config import PRESETS

        if name not in PRESETS:
            raise KpdiffInputError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls(PRESETS[name], **overrides)

    def condition(self, clips: torch.Tensor) -> torch.Tensor:
        """𝔽 = encoder(clips): ``clips [B, 2δ+1, 3, H, W]`` → ``[B, C, H/16, W/16]``."""
        return self.encoder(clips)

    def heatmaps(self, cond: torch.Tensor) -> torch.Tensor:
        """``𝔽 [B, C, H/16, W/16]`` → heatmaps ``[B, K, H/4, W/4]`` (heatmap units)."""
        return self.head(self.upsample(cond)[0])

    def loss(
        self, clips: torch.Tensor, heatmaps: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted heatmap MSE (SimpleBaseline's): ``clips [B, T, 3, H, W]``, targets
        ``heatmaps [B, K, H/4, W/4]`` in ``[0, 1]``, ``weights [B, K]`` (default ones) → scalar
        ``Σ w_bk · mean_hw (ĥ − h)² / (B·K)``, the scale of DiffPose's loss."""
        self.encoder.check_clips(clips)
        b = clips.shape[0]
        check_shape("heatmaps", heatmaps, (b, self.config.num_keypoints, *self.config.heatmap_size))
        check_finite("heatmaps", heatmaps)
        if weights is None:
            weights = heatmaps.new_ones(heatmaps.shape[:2])
        check_shape("weights", weights, (b, self.config.num_keypoints))
        error = (self.heatmaps(self.condition(clips)).float() - heatmaps.float()).pow(2)
        return (error.mean((2, 3)) * weights.float()).mean()

    @torch.no_grad()
    def predict(
        self,
        clips: torch.Tensor | None = None,
        *,
        cond: torch.Tensor | None = None,
        num_samples: int | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> EnsembleResult:
        """One pass: ``keypoints [B, K, 2]`` (crop pixels), ``scores [B, K]``, ``spread [B, K]``
        (zeros), ``heatmaps [B, K, H/4, W/4]``. ``num_samples``, ``steps`` and ``generator``
        are accepted for the :class:`~kpdiff.engine.ClipPoseModel` protocol and unused."""
        if cond is None:
            if clips is None:
                raise KpdiffInputError("predict: expected clips or cond, got neither")
            cond = self.condition(clips)
        heatmaps = self.heatmaps(cond).float()
        keypoints, scores = self.codec.decode(heatmaps)
        return EnsembleResult(
            heatmaps=heatmaps,
            keypoints=keypoints,
            scores=scores,
            spread=torch.zeros_like(scores),
            hypothesis_keypoints=keypoints[None],
        )
