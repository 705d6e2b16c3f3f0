"""HeatmapRegressor, the non-diffusion control: shapes, loss, save/load, training in the engine."""

from __future__ import annotations

import pytest
import torch

from kpdiff import DiffPose, HeatmapRegressor, KpdiffInputError
from kpdiff.engine import TrainablePoseModel


@pytest.fixture(scope="module")
def model() -> HeatmapRegressor:
    torch.manual_seed(0)
    return HeatmapRegressor.from_preset("diffpose-tiny")


def test_predict_shapes_and_zero_spread(model):
    clips = torch.randn(2, 3, 3, 128, 96)
    out = model.predict(clips, num_samples=10, steps=4)
    assert out.heatmaps.shape == (2, 17, 32, 24) and out.keypoints.shape == (2, 17, 2)
    assert torch.equal(out.spread, torch.zeros(2, 17))
    again = model.predict(cond=model.condition(clips))
    torch.testing.assert_close(again.keypoints, out.keypoints)
    assert isinstance(model, TrainablePoseModel)
    with pytest.raises(KpdiffInputError, match="clips or cond"):
        model.predict()


def test_loss_is_weighted_heatmap_mse_and_trains(model):
    torch.manual_seed(1)
    clips, targets = torch.randn(2, 3, 3, 128, 96), torch.rand(2, 17, 32, 24)
    weights = torch.ones(2, 17)
    pred = model.heatmaps(model.condition(clips))
    expected = (pred - targets).pow(2).mean((2, 3)).mean()
    assert model.loss(clips, targets, weights).item() == pytest.approx(expected.item(), rel=1e-5)
    weights[:, 3:] = 0
    masked = (pred - targets).pow(2).mean((2, 3))[:, :3].sum() / (2 * 17)
    assert model.loss(clips, targets, weights).item() == pytest.approx(masked.item(), rel=1e-5)
    with pytest.raises(KpdiffInputError, match="heatmaps"):
        model.loss(clips, targets[:, :5])
    net = HeatmapRegressor.from_preset("diffpose-tiny")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    first = net.loss(clips, targets).item()
    for _ in range(5):
        loss = net.loss(clips, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_save_and_load_round_trip_and_foreign_weights(model, tmp_path):
    model.save_pretrained(tmp_path / "reg")
    loaded = HeatmapRegressor.from_pretrained(tmp_path / "reg")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(KpdiffInputError, match="does not match"):
        DiffPose.from_pretrained(tmp_path / "reg")  # a regressor's weights are not DiffPose's
