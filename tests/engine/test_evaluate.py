"""``evaluate_model``: AP per sweep point, the encoder once per batch, reproducible sampling,
every GT frame in the predictions, and a perfect prediction scoring 100."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from kpdiff.data.records import PersonPose, batch_poses
from kpdiff.diffpose import DiffPose
from kpdiff.engine.evaluate import (
    ClipPoseModel,
    evaluate_model,
    predictions_to_videos,
    write_predictions,
)
from kpdiff.metrics import posetrack_ap

SWEEP = [(1, 1), (2, 1), (1, 2), (2, 2)]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return DiffPose.from_pretrained(tiny_model_dir)


def run(model, datasets, **kwargs):
    kwargs = {"sweep": SWEEP, "batch_size": 4, "max_clips": 8, **kwargs}
    return evaluate_model(model, datasets.val, datasets.val_videos, **kwargs)


def keypoints(result, key) -> list[np.ndarray]:
    return [p.keypoints for v in result.predictions[key] for f in v.frames for p in f.persons]


def test_sweep_gives_ap_for_every_point(model, tiny_datasets):
    assert isinstance(model, ClipPoseModel)
    result = run(model, tiny_datasets)
    assert list(result.ap) == SWEEP and list(result.predictions) == SWEEP
    assert result.clips == 8 and result.seconds > 0
    for ap in result.ap.values():
        assert list(ap.columns)[-1] == "Mean" and "Head" in ap.columns
        assert all(0 <= v <= 100 for v in ap.columns.values() if math.isfinite(v))
        assert math.isfinite(ap.columns["Mean"])
    heads = {
        0.3 * math.hypot(p.head_box[2] - p.head_box[0], p.head_box[3] - p.head_box[1])
        for v in tiny_datasets.val_videos for f in v.frames for p in f.persons
    }  # fmt: skip
    for key, (spread, error) in result.spread_error.items():  # GT boxes: per visible joint
        assert spread.shape == error.shape and len(spread) > 0 and (spread >= 0).all()
        threshold = result.pckh_threshold[key]  # 0.5 × headSize of the joint's own person
        assert threshold.shape == spread.shape and np.isfinite(threshold).all()
        assert set(np.round(threshold, 6)) <= {round(h, 6) for h in heads}
    table = result.table().splitlines()
    assert len(table) == 1 + len(SWEEP) and table[0].split()[:2] == ["N", "steps"]


def test_encoder_runs_once_per_batch_whatever_the_sweep(model, tiny_datasets, monkeypatch):
    calls = []
    condition = model.condition

    def counting(clips):
        calls.append(len(clips))
        return condition(clips)

    monkeypatch.setattr(model, "condition", counting)
    encoder_calls = []
    handle = model.encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    try:
        run(model, tiny_datasets, sweep=[(1, 1)])
        assert calls == [4, 4] and len(encoder_calls) == 2
        calls.clear(), encoder_calls.clear()
        run(model, tiny_datasets)  # 4 points
        assert calls == [4, 4] and len(encoder_calls) == 2
    finally:
        handle.remove()


def test_same_seed_same_predictions(model, tiny_datasets):
    a, b = run(model, tiny_datasets, seed=3), run(model, tiny_datasets, seed=3)
    other = run(model, tiny_datasets, seed=4)
    for key in SWEEP:
        assert a.ap[key].columns == b.ap[key].columns
        for x, y in zip(keypoints(a, key), keypoints(b, key), strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(
        not np.array_equal(x, y)
        for x, y in zip(keypoints(a, (1, 1)), keypoints(other, (1, 1)), strict=True)
    )


def test_a_points_predictions_do_not_depend_on_the_rest_of_the_sweep(model, tiny_datasets):
    alone = run(model, tiny_datasets, sweep=[(2, 2)])
    within = run(model, tiny_datasets)
    for x, y in zip(keypoints(alone, (2, 2)), keypoints(within, (2, 2)), strict=True):
        np.testing.assert_array_equal(x, y)


def test_predictions_hold_every_gt_frame(model, tiny_datasets, tmp_path):
    result = run(model, tiny_datasets, sweep=[(1, 1)])
    gt = tiny_datasets.val_videos
    pred = result.predictions[(1, 1)]
    assert [v.name for v in pred] == [v.name for v in gt]
    for pv, gv in zip(pred, gt, strict=True):
        assert [(f.image_path, f.image_id, f.frame_index, f.is_labeled) for f in pv.frames] == [
            (f.image_path, f.image_id, f.frame_index, f.is_labeled) for f in gv.frames
        ]
    assert sum(len(f.persons) for v in pred for f in v.frames) == 8  # max_clips
    for video in pred:
        for frame in video.frames:
            ids = [p.track_id for p in frame.persons]
            assert len(set(ids)) == len(ids)  # poseval refuses duplicate track ids
            for p in frame.persons:
                assert p.keypoints.shape == (17, 3) and np.isfinite(p.keypoints).all()
    files = write_predictions(pred, tmp_path / "pred", tiny_datasets.schema)
    assert sorted(f.name for f in files) == sorted(f"{v.name}.json" for v in gt)


def gt_rows(dataset) -> list[PersonPose]:
    """The dataset's GT keypoints, as ``evaluate_model``'s rows (through ``batch_poses``)."""
    rows = []
    for batch in DataLoader(dataset, batch_size=5, shuffle=False):
        fake = SimpleNamespace(
            keypoints=batch["keypoints"][..., :2],  # crop pixels
            scores=batch["weights"],  # absent joints get score 0: ranked after every hit
            spread=torch.zeros(batch["weights"].shape),
        )
        rows += batch_poses(batch, fake)
    return rows


def test_gt_keypoints_as_predictions_score_100(tiny_datasets):
    rows = gt_rows(tiny_datasets.val)
    videos = predictions_to_videos(rows, tiny_datasets.val_videos)
    ap = posetrack_ap(tiny_datasets.val_videos, videos)
    assert ap.columns == pytest.approx({c: 100.0 for c in ap.columns})
    for row in rows:  # and the mapping back to the image is exact
        np.testing.assert_allclose(row.keypoints, row.gt_keypoints[:, :2], atol=1e-3)


class Oracle(nn.Module):
    """A 'model' that predicts the ground truth, batch after batch, in the loader's order."""

    def __init__(self, dataset, batch_size: int) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.batches = [
            (b["keypoints"][..., :2], b["weights"])
            for b in DataLoader(dataset, batch_size=batch_size, shuffle=False)
        ]
        self.calls = 0

    def condition(self, clips):
        self.calls += 1
        return (clips,)

    def predict(self, *, cond, num_samples, steps, generator):
        kp, weights = self.batches[self.calls - 1]
        assert len(kp) == len(cond[0])
        return SimpleNamespace(keypoints=kp, scores=weights, spread=torch.zeros(weights.shape))


@pytest.mark.parametrize("max_clips", [None, 5, 13])
def test_a_perfect_model_scores_100_also_on_a_subset(tiny_datasets, max_clips):
    val = tiny_datasets.val
    subset = Subset(val, range(len(val))[:max_clips])
    oracle = Oracle(subset, batch_size=4)
    assert isinstance(oracle, ClipPoseModel)  # not a DiffPose: the protocol is all it needs
    result = evaluate_model(
        oracle, val, tiny_datasets.val_videos, sweep=[(1, 1)], batch_size=4, max_clips=max_clips
    )
    columns = result.ap[(1, 1)].columns
    assert columns == pytest.approx({c: 100.0 for c in columns})
    assert result.clips == len(subset)
