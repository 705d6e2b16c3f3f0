"""Evaluation metrics: PoseTrack multi-person pose AP (poseval's protocol)."""

from __future__ import annotations

from kpdiff.metrics.posetrack_ap import PCKH_THRESHOLD, PoseTrackAP, head_size, posetrack_ap

__all__ = ["PCKH_THRESHOLD", "PoseTrackAP", "head_size", "posetrack_ap"]
