"""PersonDetector's plumbing without downloads: torchvision's detector built untrained, and a
stub with fixed outputs for the person label, the score threshold, xyxy → xywh and batching;
weights that are missing, foreign or unobtainable offline are one-line errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from kpdiff.detection import PersonDetector
from kpdiff.errors import KpdiffInputError


class Stub(torch.nn.Module):
    """Two persons and a dog per image; records the batch sizes it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def forward(self, images):
        self.calls.append((len(images), tuple(images[0].shape)))
        assert all(float(im.min()) >= 0 and float(im.max()) <= 1 for im in images)
        return [
            {
                "boxes": torch.tensor([[10.0, 20, 50, 120], [5, 5, 7, 9], [0, 0, 30, 30]]),
                "labels": torch.tensor([1, 1, 18]),
                "scores": torch.tensor([0.6, 0.9, 0.99]),
            }
            for _ in images
        ]


def frames(n: int) -> list[np.ndarray]:
    return [np.full((64, 80, 3), 40 * i % 255, np.uint8) for i in range(n)]


def test_person_boxes_are_xywh_thresholded_and_sorted():
    stub = Stub()
    detector = PersonDetector(model=stub, min_score=0.7, batch_size=2)
    out = list(detector.detect(frames(5)))
    assert len(out) == 5
    for boxes in out:  # the dog and the 0.6 person are gone
        np.testing.assert_allclose(boxes, [[5, 5, 2, 4, 0.9]], rtol=1e-6)
    assert [n for n, _ in stub.calls] == [2, 2, 1]
    assert stub.calls[0][1] == (3, 64, 80)  # RGB, channels first
    (both,) = PersonDetector(model=Stub(), min_score=0.5).detect(frames(1))
    assert both[:, 4].tolist() == pytest.approx([0.9, 0.6])  # highest score first


def test_an_untrained_torchvision_detector_runs():
    torch.manual_seed(0)
    detector = PersonDetector("fasterrcnn_mobilenet_v3_large_320_fpn", "random", min_score=0.0)
    (boxes,) = detector.detect(frames(1))
    assert boxes.ndim == 2 and boxes.shape[1] == 5 and np.isfinite(boxes).all()


def test_weights_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(KpdiffInputError, match="detector: expected one of"):
        PersonDetector("yolo")
    with pytest.raises(KpdiffInputError, match="does not exist"):
        PersonDetector(weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KpdiffInputError, match="not a PyTorch weights file"):
        PersonDetector(weights=tmp_path / "junk.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(KpdiffInputError, match="does not hold the weights"):
        PersonDetector(weights=tmp_path / "other.pth")
    # offline, nothing in the cache: the error says where to get the file
    from torchvision.models import detection

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    enum = type(detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.DEFAULT)
    monkeypatch.setattr(enum, "get_state_dict", offline)
    with pytest.raises(KpdiffInputError) as err:
        PersonDetector()
    message = str(err.value)
    assert "download.pytorch.org" in message and "--detector-weights" in message
    assert "\n" not in message
    with pytest.raises(KpdiffInputError, match="min_score"):
        PersonDetector(model=Stub(), min_score=2)
