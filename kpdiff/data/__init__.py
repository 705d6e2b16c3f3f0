"""Keypoint schemas, PoseTrack readers and writers, detector boxes, the synthetic dataset and
the top-down clip pipeline."""

from kpdiff.data.clips import (
    AugmentConfig,
    ClipConfig,
    ClipSample,
    TopDownClipDataset,
    clip_indices,
    crop_to_image,
)
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
from kpdiff.data.synthetic import (
    HUMAN_RIG,
    QUADRUPED,
    QUADRUPED_RIG,
    FigureRig,
    Motion,
    Part,
    Swing,
    SyntheticConfig,
    build_synthetic_dataset,
    get_rig,
    register_rig,
)
from kpdiff.data.transforms import apply_affine, box_to_center_scale, crop_affine, invert_affine

__all__ = [
    "COCO",
    "DEFAULT_MIN_SCORE",
    "HUMAN_RIG",
    "POSETRACK",
    "QUADRUPED",
    "QUADRUPED_RIG",
    "AugmentConfig",
    "ClipConfig",
    "ClipSample",
    "FigureRig",
    "FrameAnnotation",
    "KeypointSchema",
    "Motion",
    "Part",
    "PersonAnnotation",
    "Swing",
    "SyntheticConfig",
    "TopDownClipDataset",
    "VideoAnnotation",
    "apply_affine",
    "box_to_center_scale",
    "boxes_for_frame",
    "build_synthetic_dataset",
    "clip_indices",
    "crop_affine",
    "crop_to_image",
    "detect_format",
    "get_rig",
    "get_schema",
    "image_key",
    "invert_affine",
    "read_detections",
    "read_posetrack",
    "read_posetrack17",
    "read_posetrack18",
    "read_posetrack21",
    "register_rig",
    "register_schema",
    "write_json_atomic",
    "write_posetrack18",
    "write_posetrack18_predictions",
]
