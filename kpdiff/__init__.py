"""kpdiff: diffusion models over keypoint heatmaps.

The public API, and nothing else. See the docs for the data flow from clip to keypoints.
"""

from kpdiff._lazy import lazy_exports

__version__ = "0.1.0"

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codecs": (
            "GaussianHeatmapCodec",
            "SignalRange",
            "flip_heatmaps",
            "flip_keypoints",
        ),
        "data.records": ("PersonPose",),
        "decoder": (
            "DecoderCondition",
            "PoseDecoder",
            "StepRescale",
            "timestep_embedding",
        ),
        "diffpose": ("DiffPose",),
        "diffpose_config": (
            "PRESETS",
            "DiffPoseConfig",
            "DiffPoseOverrides",
        ),
        "diffusion": (
            "Denoiser",
            "HeatmapDiffusion",
            "default_scheduler",
        ),
        "detection": ("PersonDetector",),
        "drawing": ("draw_poses",),
        "encoder": (
            "Backbone",
            "SpatioTemporalEncoder",
            "build_backbone",
            "load_backbone_state_dict",
            "load_backbone_weights",
        ),
        "export": (
            "ExportReport",
            "export_onnx",
            "export_torch",
        ),
        "errors": (
            "KpdiffError",
            "KpdiffInputError",
        ),
        "hub": ("ModelCard",),
        "lookup": (
            "ConvMixer",
            "FeaturePyramid",
            "HeatmapEmbed",
            "LookupInteraction",
            "ScaleFusion",
            "TokenMixer",
        ),
        "onnx_sampler": (
            "OnnxPoseResult",
            "OnnxPoseSampler",
        ),
        "pipeline": (
            "FramePoses",
            "PosePipeline",
        ),
        "regressor": ("HeatmapRegressor",),
        "sampling": (
            "EnsembleResult",
            "EnsembleSampler",
            "repeat_cond",
        ),
        "tracking": (
            "IoUTracker",
            "box_iou",
        ),
    },
)
__all__ += ["__version__"]
