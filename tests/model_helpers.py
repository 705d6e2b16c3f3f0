"""Models the tests share."""

from __future__ import annotations

from kpdiff.diffpose import PRESETS

# A micro model: 64×48 crops → 16×12 heatmaps, 𝔽 at 4×3, K = 5; runs and exports in milliseconds.
MICRO = PRESETS["diffpose-tiny"].replace(
    num_keypoints=5,
    backbone_kwargs={"depth": 1, "embed_dim": 48, "num_heads": 3},
    input_size=(64, 48),
    dim=32,
    decoder_dims=(32, 16, 8),
)
