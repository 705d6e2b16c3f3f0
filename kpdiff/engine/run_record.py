"""What ``experiment.yaml`` records of a run: the config as it ran, given models and datasets.

:func:`experiment_record` is the config :func:`~kpdiff.engine.train` writes to the run folder:
``model.custom`` describes a model passed to it (class, own config, size), ``data.custom``
datasets passed to it that the config does not describe (class, clips, clip geometry,
augmentation, targets, frames folder); both are ``None`` otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from torch import nn

from kpdiff.data.clips import TopDownClipDataset
from kpdiff.data.schemas import get_schema
from kpdiff.engine.config import ExperimentConfig
from kpdiff.engine.data import Datasets

__all__ = ["experiment_record"]


def experiment_record(
    config: ExperimentConfig, model: nn.Module | None, datasets: Datasets | None
) -> ExperimentConfig:
    """``config`` as it ran, for ``experiment.yaml``: with ``model.custom`` describing a model
    given to :func:`train` and ``data.custom`` given datasets that ``config`` does not describe
    (both ``None`` otherwise, also when ``config`` held other values)."""
    model_record = None if model is None else _model_record(model)
    data_record = None
    if datasets is not None and not _datasets_as_configured(config, datasets):
        data_record = {
            "note": "the datasets passed to train(datasets=...): the settings above that build "
            "datasets (root, synthetic, splits, val_boxes, min_box_score, edge, augment) did "
            "not build them",
            "schema": datasets.schema.name,
            "train": _dataset_record(datasets.train),
            "val": None if datasets.val is None else _dataset_record(datasets.val),
        }
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, custom=model_record),
        data=dataclasses.replace(config.data, custom=_plain(data_record)),
    )


def _model_record(model: nn.Module) -> dict[str, Any]:
    """Class, own config (``model.config.to_dict()``, when it has one) and size of ``model``."""
    own = getattr(model, "config", None)
    to_dict = getattr(own, "to_dict", None)
    record = {
        "note": "the model passed to train(model=...), trained from the weights it had: preset, "
        "overrides and pretrained_backbone did not build it",
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": to_dict() if callable(to_dict) else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return _plain(record)


def _dataset_record(dataset: Any) -> dict[str, Any]:
    """Class, clips and (a ``TopDownClipDataset``) the settings of one dataset."""
    record: dict[str, Any] = {"class": f"{type(dataset).__module__}.{type(dataset).__qualname__}"}
    record["clips"] = len(dataset) if hasattr(dataset, "__len__") else None
    if isinstance(dataset, TopDownClipDataset):
        codec = dataset.codec
        record.update(
            schema=dataset.schema.name,
            clip=dataclasses.asdict(dataset.config),
            augment=None if dataset.augment is None else dataclasses.asdict(dataset.augment),
            targets={
                "heatmap_size": list(codec.heatmap_size),
                "stride": codec.stride,
                "sigma": codec.sigma,
            },
            frames=_frames_folder(dataset),
        )
    return record


def _datasets_as_configured(config: ExperimentConfig, datasets: Datasets) -> bool:
    """Whether ``datasets`` are what ``prepare_datasets(config)`` reads: clips of the schema, clip
    geometry, augmentation and targets of ``config`` from frames under ``data.root``."""
    train, val = datasets.train, datasets.val
    if not isinstance(train, TopDownClipDataset) or not isinstance(val, TopDownClipDataset):
        return False
    model = config.model.diffpose_config()
    clip = model.data_config(edge=config.data.edge, min_box_score=config.data.min_box_score)
    codec = model.codec()
    schema = get_schema(config.data.schema).name
    root = os.path.abspath(config.data.root)
    for dataset, augment in ((train, config.data.augment), (val, None)):
        folder = _frames_folder(dataset)
        if (
            dataset.schema.name != schema
            or dataset.config != clip
            or dataset.augment != augment
            or tuple(dataset.codec.heatmap_size) != tuple(codec.heatmap_size)
            or dataset.codec.input_size != codec.input_size
            or dataset.codec.sigma != codec.sigma
            or (folder is not None and os.path.commonpath([folder, root]) != root)
        ):
            return False
    return datasets.schema.name == schema


def _frames_folder(dataset: TopDownClipDataset) -> str | None:
    """The folder (absolute) that holds the frames of every clip, ``None`` without clips."""
    firsts = {id(s.frame_paths): s.frame_paths[0] for s in dataset.samples if s.frame_paths}
    if not firsts:
        return None
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in firsts.values()])


def _plain(value: Any) -> Any:
    """``value`` in plain JSON types (tuples as lists; anything else as its ``str``)."""
    return json.loads(json.dumps(value, default=str))
