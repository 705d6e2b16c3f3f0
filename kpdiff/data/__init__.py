"""Keypoint schemas, PoseTrack readers and writers, detector boxes, the synthetic dataset and
the top-down clip pipeline."""

from kpdiff._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "clips": (
            "AugmentConfig",
            "ClipConfig",
            "ClipSample",
            "TopDownClipDataset",
            "clip_indices",
            "crop_to_image",
            "read_frame",
        ),
        "detections": (
            "DEFAULT_MIN_SCORE",
            "boxes_for_frame",
            "image_key",
            "read_detections",
        ),
        "posetrack": (
            "detect_format",
            "read_posetrack",
            "read_posetrack17",
            "read_posetrack18",
            "read_posetrack21",
            "write_json_atomic",
            "write_posetrack18",
            "write_posetrack18_predictions",
        ),
        "records": (
            "PersonPose",
            "batch_poses",
        ),
        "schemas": (
            "COCO",
            "POSETRACK",
            "QUADRUPED",
            "KeypointSchema",
            "get_schema",
            "register_schema",
        ),
        "structures": (
            "FrameAnnotation",
            "PersonAnnotation",
            "VideoAnnotation",
        ),
        "synthetic": (
            "HUMAN_RIG",
            "QUADRUPED_RIG",
            "FigureRig",
            "Motion",
            "Part",
            "Swing",
            "SyntheticConfig",
            "build_synthetic_dataset",
            "get_rig",
            "register_rig",
        ),
        "transforms": (
            "apply_affine",
            "box_to_center_scale",
            "crop_affine",
            "invert_affine",
        ),
    },
)
