"""The two strides of the model's geometry, each written once (no torch here).

A crop of ``H × W`` input pixels gives the encoder's features 𝔽 at ``H/16 × W/16`` and heatmaps
at ``H/4 × W/4``; the decoder's pyramid climbs from 𝔽 to the heatmaps in ``16 / 4 = 4`` (×1, ×2,
×4). The codec, the clip pipeline, the decoder, the kernels and the torch-free ONNX sampler all
take these values from here.
"""

from __future__ import annotations

__all__ = ["HEATMAP_STRIDE", "PATCH_STRIDE"]

HEATMAP_STRIDE = 4
"""Input pixels per heatmap pixel: a 256×192 crop gives 64×48 heatmaps (SimpleBaseline's,
DiffPose's). Also :data:`kpdiff.codecs.HEATMAP_STRIDE`."""

PATCH_STRIDE = 16
"""Input pixels per pixel of 𝔽, the encoder's features (a ViT's 16-pixel patches, or a CNN's
stride-16 stage). Also :data:`kpdiff.encoder.PATCH_STRIDE`."""
