"""Person boxes for top-down pose: a torchvision detector, optional.

``kpdiff predict VIDEO`` without ``--boxes`` runs one of torchvision's COCO detectors and keeps
its ``person`` boxes. The default is Faster R-CNN with a MobileNetV3-Large FPN backbone
(``fasterrcnn_mobilenet_v3_large_fpn``: 32.8 box AP on COCO val2017 per torchvision, 4.5
GFLOPs): the lightest torchvision detector whose people are good enough for pose (the 320-pixel
variant, 22.8 AP, misses small people). ``fasterrcnn_resnet50_fpn_v2`` (46.7 AP, 280 GFLOPs) is
the choice on a GPU. Speeds on this project's CPU: docs/tutorials/video.md.

Weights: a local file (``weights=PATH``, the ``.pth`` of torchvision's URL), torchvision's own
cache (``~/.cache/torch/hub/checkpoints``), or torchvision's download when online; with none of
them a one-line error says where to get the file. ``weights="random"`` builds the detector
untrained (tests).

    detector = PersonDetector()                       # downloads or uses the cache
    boxes = detector.detect([frame_bgr, ...])         # [N, 5] xywh + score per frame
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpdiff.errors import KpdiffInputError

__all__ = ["DETECTORS", "PersonDetector"]

DETECTORS = {
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights",
}
"""The torchvision detectors kpdiff can run, by builder name, with their weights enum."""

PERSON = 1  # COCO's person label in torchvision's detectors


class PersonDetector:
    """Person boxes on BGR frames with a torchvision COCO detector.

    Args:
        name: a key of :data:`DETECTORS`. Default ``"fasterrcnn_mobilenet_v3_large_fpn"``.
        weights: a ``.pth`` state dict file; ``None`` (default): torchvision's cache or its
            download; ``"random"``: untrained (tests).
        min_score: boxes scoring below are dropped. Default ``0.5``.
        batch_size: frames per forward. Default ``4``.
        device: where the detector runs. Default ``"cpu"``.
        model: a ready detector (any module with torchvision's detection interface: a list of
            ``[3, H, W]`` RGB floats in ``[0, 1]`` in, a list of ``{"boxes" [N, 4] xyxy,
            "labels" [N], "scores" [N]}`` out); replaces ``name`` and ``weights``.

    Raises:
        KpdiffInputError: an unknown ``name``, a weights file that is missing or not this
            detector's, no weights offline.
    """

    def __init__(
        self,
        name: str = "fasterrcnn_mobilenet_v3_large_fpn",
        weights: str | os.PathLike[str] | None = None,
        *,
        min_score: float = 0.5,
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        model: nn.Module | None = None,
    ) -> None:
        if not 0 <= min_score <= 1:
            raise KpdiffInputError(f"min_score: expected a number in [0, 1], got {min_score!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise KpdiffInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.min_score, self.batch_size, self.device = min_score, batch_size, torch.device(device)
        self.name = name if model is None else type(model).__name__
        self.model = (model if model is not None else _build(name, weights)).to(self.device).eval()

    @torch.no_grad()
    def detect(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The person boxes of each BGR ``uint8`` frame ``[H, W, 3]``, lazily, in order:
        ``[N, 5]`` float64 ``(x, y, w, h, score)``, highest score first."""
        batch: list[np.ndarray] = []
        for frame in frames:
            if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
                raise KpdiffInputError(
                    f"frames: expected BGR arrays [H, W, 3], got {getattr(frame, 'shape', frame)}"
                )
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield from self._forward(batch)
                batch = []
        if batch:
            yield from self._forward(batch)

    def _forward(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        images = [
            torch.from_numpy(np.ascontiguousarray(f[..., ::-1])).permute(2, 0, 1).to(self.device)
            / 255.0
            for f in frames
        ]
        out = []
        for det in self.model(images):
            keep = (det["labels"] == PERSON) & (det["scores"] >= self.min_score)
            xyxy = det["boxes"][keep].double().cpu().numpy().reshape(-1, 4)
            scores = det["scores"][keep].double().cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            boxes = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores])[order]
            out.append(boxes[np.isfinite(boxes).all(axis=1)])
        return out


def _build(name: str, weights: str | os.PathLike[str] | None) -> nn.Module:
    from torchvision.models import detection

    if name not in DETECTORS:
        raise KpdiffInputError(f"detector: expected one of {sorted(DETECTORS)}, got {name!r}")
    builder = getattr(detection, name)
    enum = getattr(detection, DETECTORS[name]).DEFAULT
    if weights == "random":
        return builder(weights=None, weights_backbone=None)
    model = builder(weights=None, weights_backbone=None, num_classes=len(enum.meta["categories"]))
    try:
        model.load_state_dict(_state_dict(name, enum, weights))
    except (RuntimeError, TypeError, AttributeError):
        raise KpdiffInputError(
            f"--detector-weights: {weights} does not hold the weights of {name} (from {enum.url})"
        ) from None
    return model


def _state_dict(name: str, enum: Any, weights: str | os.PathLike[str] | None) -> dict:
    file = Path(weights) if weights is not None else None
    if file is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        if cached.is_file():
            file = cached
        else:
            try:
                return enum.get_state_dict(progress=False, check_hash=True)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                raise KpdiffInputError(
                    f"detector: no weights for {name} here and they cannot be downloaded "
                    f"({' '.join(str(err).split())[:120]}); download {enum.url} elsewhere and "
                    f"pass it with --detector-weights PATH, or give --boxes BOXES.json"
                ) from None
    if not file.is_file():
        raise KpdiffInputError(f"--detector-weights: {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)  # tensors only: no code
    except Exception as err:  # a damaged or foreign file: pickle and zip errors of any type
        raise KpdiffInputError(
            f"--detector-weights: {file} is not a PyTorch weights file ({type(err).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise KpdiffInputError(f"--detector-weights: {file} holds no state dict")
    return state
