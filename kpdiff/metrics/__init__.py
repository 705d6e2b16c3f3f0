"""Evaluation metrics: PoseTrack multi-person pose AP, as the official poseval computes it."""

from __future__ import annotations

import sys

from kpdiff.metrics.posetrack_ap import *  # noqa: F403  (its __all__ is the public API)

__all__ = list(sys.modules["kpdiff.metrics.posetrack_ap"].__all__)
