"""Keypoint schemas, PoseTrack readers and writers, detector boxes, the synthetic dataset and
the top-down clip pipeline."""

from kpdiff.data.detections import DEFAULT_MIN_SCORE, boxes_for_frame, image_key, read_detections
from kpdiff.data.posetrack import (
    detect_format,
    read_posetrack,
    read_posetrack17,
    read_posetrack18,
    read_posetrack21,
    write_json_atomic,
    write_posetrack18,
    write_posetrack18_predictions,
)
from kpdiff.data.schemas import COCO, POSETRACK, KeypointSchema, get_schema, register_schema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation

__all__ = [
    "COCO",
    "DEFAULT_MIN_SCORE",
    "POSETRACK",
    "FrameAnnotation",
    "KeypointSchema",
    "PersonAnnotation",
    "VideoAnnotation",
    "boxes_for_frame",
    "detect_format",
    "get_schema",
    "image_key",
    "read_detections",
    "read_posetrack",
    "read_posetrack17",
    "read_posetrack18",
    "read_posetrack21",
    "register_schema",
    "write_json_atomic",
    "write_posetrack18",
    "write_posetrack18_predictions",
]
