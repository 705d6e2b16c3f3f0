"""From an experiment's data section to datasets and a model that fits them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from torch.utils.data import Dataset

from kpdiff.data.clips import TopDownClipDataset
from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.schemas import KeypointSchema, get_schema
from kpdiff.data.structures import VideoAnnotation
from kpdiff.data.synthetic import build_synthetic_dataset
from kpdiff.diffpose import DiffPose
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.distributed import DistInfo, barrier
from kpdiff.errors import KpdiffInputError

__all__ = ["Datasets", "build_model", "ensure_dataset", "prepare_datasets"]


@dataclass
class Datasets:
    """The training clips, the validation clips and the ground truth of both.

    Build one yourself to train on data of your own (``train(config, datasets=…)``): only
    ``train``, ``val``, ``val_videos`` and ``schema`` are needed.

    Attributes:
        train: the training clips (augmented), e.g. a ``TopDownClipDataset``.
        val: the validation clips (no augmentation), or ``None``: no validation.
        val_videos: the validation ground truth the AP is computed against.
        schema: the keypoint schema of both.
        train_videos: the training ground truth (empty when the training split was not read).
        train_eval: the training clips without augmentation (ground-truth boxes), to measure
            the train AP beside the validation AP, or ``None``.
    """

    train: Dataset
    val: TopDownClipDataset | None
    val_videos: list[VideoAnnotation]
    schema: KeypointSchema
    train_videos: list[VideoAnnotation] = field(default_factory=list)
    train_eval: TopDownClipDataset | None = None


def build_model(config: ExperimentConfig, *, num_keypoints: int | None = None) -> DiffPose:
    """The model of ``config.model`` (preset + overrides), with ``num_keypoints`` joints."""
    overrides = config.model.overrides.changes()
    if num_keypoints is not None:
        overrides.setdefault("num_keypoints", num_keypoints)
    overrides.setdefault("schema", get_schema(config.data.schema).name)
    model = DiffPose.from_preset(config.model.preset, **overrides)
    if config.model.pretrained_backbone:
        model.encoder.load_backbone(config.model.pretrained_backbone)
    return model


def ensure_dataset(config: ExperimentConfig, info: DistInfo | None = None) -> Path:
    """Build the synthetic dataset at ``data.root`` when asked and missing (rank 0 builds)."""
    data = config.data
    root = Path(data.root)
    if data.synthetic is not None:
        if info is None or info.is_main:
            build_synthetic_dataset(
                root,
                replace(data.synthetic, schema=data.schema),
                splits=tuple(dict.fromkeys([data.train_split, data.val_split])),
            )
        barrier()
    elif not root.exists():
        raise KpdiffInputError(f"data.root: {root} does not exist (and data.synthetic is null)")
    return root


def prepare_datasets(
    config: ExperimentConfig, info: DistInfo | None = None, *, train: bool = True
) -> Datasets:
    """Read the annotations and build the train / val clip datasets of ``config``."""
    root = ensure_dataset(config, info)
    schema = get_schema(config.data.schema)
    model_cfg = config.model.diffpose_config()
    # The model says what clips it takes and what its targets are (heatmap size, σ).
    clip_cfg = model_cfg.data_config(edge=config.data.edge, min_box_score=config.data.min_box_score)
    codec = model_cfg.codec()
    common = {"schema": schema, "config": clip_cfg, "codec": codec}
    train_set: Dataset = TopDownClipDataset([], **common)
    train_videos: list[VideoAnnotation] = []
    train_eval = None
    if train:
        train_videos = read_posetrack(root, split=config.data.train_split, schema=schema)
        train_set = TopDownClipDataset.from_videos(
            train_videos, root, augment=config.data.augment, **common
        )
        train_eval = TopDownClipDataset.from_videos(train_videos, root, **common)
    val_videos = read_posetrack(root, split=config.data.val_split, schema=schema)
    boxes = resolve_boxes(config.data.val_boxes, root)
    val = TopDownClipDataset.from_videos(val_videos, root, detections=boxes, **common)
    return Datasets(
        train=train_set, val=val, val_videos=val_videos, schema=schema,
        train_videos=train_videos, train_eval=train_eval,
    )  # fmt: skip


def resolve_boxes(val_boxes: str, root: Path, argument: str = "data.val_boxes") -> Path | None:
    """``None`` for ``"gt"``; else the box file, a relative path tried from the working folder
    first and then from the dataset root (so ``--set data.root=…`` carries relative boxes along).
    ``argument`` names the value in the error. Default ``"data.val_boxes"``.
    """
    if val_boxes == "gt":
        return None
    for candidate in (Path(val_boxes), root / val_boxes):
        if candidate.is_file():
            return candidate
    raise KpdiffInputError(
        f"{argument}: {val_boxes} does not exist (nor under the data root {root}); "
        f"use 'gt' or a detector-box JSON file"
    )
