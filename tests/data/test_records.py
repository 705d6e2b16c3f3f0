"""``PersonPose``: shapes checked, frozen and read-only, equality, ``to_dict`` round trip,
``triplets`` and ``to_annotation``; ``batch_poses`` makes one record per clip, in image and
crop pixels, flips undone."""

from __future__ import annotations

import dataclasses
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

import kpdiff
from kpdiff.data.clips import AugmentConfig, ClipSample, TopDownClipDataset
from kpdiff.data.records import PersonPose, batch_poses
from kpdiff.errors import KpdiffInputError


def person(k: int = 3, **kwargs) -> PersonPose:
    values = {
        "keypoints": np.arange(2 * k, dtype=np.float32).reshape(k, 2),
        "scores": np.linspace(0, 1, k),
        "spread": np.full(k, 2.5),
        "box": [10, 20, 30, 40],
        "box_score": 0.9,
        "track_id": 4,
        "video": "v",
        "frame_index": 7,
        **kwargs,
    }
    return PersonPose(**values)


def test_a_record_holds_float64_read_only_arrays():
    p = person()
    assert kpdiff.PersonPose is PersonPose
    for name in ("keypoints", "scores", "spread", "box"):
        value = getattr(p, name)
        assert value.dtype == np.float64 and not value.flags.writeable
    assert p.keypoints.shape == (3, 2) and p.box.tolist() == [10, 20, 30, 40]
    assert (p.box_score, p.track_id, p.video, p.frame_index) == (0.9, 4, "v", 7)
    assert p.crop_keypoints is None and p.gt_keypoints is None and p.gt_track_id == -1
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.track_id = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        p.keypoints[0, 0] = 1
    source = np.zeros(3)
    q = person(scores=source)
    source[0] = 1  # the record holds its own copy
    assert q.scores[0] == 0


def test_positional_prediction_and_defaults():
    p = PersonPose(np.zeros((2, 2)), np.ones(2), None, np.ones(4))
    assert (p.spread, p.box_score, p.track_id, p.video, p.frame_index) == (None, 1.0, None,
                                                                          None, None)  # fmt: skip
    with pytest.raises(TypeError):
        PersonPose(np.zeros((2, 2)), np.ones(2), None, np.ones(4), 1.0, 3, "video")  # keyword only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keypoints": np.zeros((3, 3))}, r"keypoints: expected shape \[K, 2\], got \[3, 3\]"),
        ({"scores": np.zeros(4)}, r"scores: expected shape \[3\], got \[4\]"),
        ({"spread": np.zeros((3, 1))}, r"spread: expected shape \[3\]"),
        ({"box": [1, 2, 3]}, r"box: expected shape \[4\], got \[3\]"),
        ({"crop_keypoints": np.zeros((2, 2))}, r"crop_keypoints: expected shape \[3, 2\]"),
        ({"gt_keypoints": np.zeros((3, 2))}, r"gt_keypoints: expected shape \[3, 3\]"),
        ({"scores": ["a", "b", "c"]}, "scores: expected a float array"),
        ({"box_score": "high"}, "box_score: expected a finite number"),
        ({"box_score": float("nan")}, "box_score: expected a finite number"),
        ({"track_id": 1.5}, "track_id: expected an int or None"),
        ({"frame_index": True}, "frame_index: expected an int or None"),
        ({"gt_track_id": None}, "gt_track_id: expected an int, got None"),
        ({"video": 3}, "video: expected a str or None"),
    ],
)
def test_wrong_fields_are_named(change, message):
    with pytest.raises(KpdiffInputError, match=message):
        person(**change)


def test_numpy_scalars_become_python_numbers():
    p = person(track_id=np.int64(2), frame_index=np.int32(5), box_score=np.float32(0.5))
    assert type(p.track_id) is int and type(p.frame_index) is int and type(p.box_score) is float


def test_equality_replace_and_pickle():
    p = person(gt_keypoints=np.full((3, 3), np.nan))
    assert p == person(gt_keypoints=np.full((3, 3), np.nan))  # NaN equals NaN
    assert p != person() and p != person(gt_keypoints=np.zeros((3, 3)))
    assert p != "not a record"
    moved = dataclasses.replace(p, track_id=9)
    assert moved.track_id == 9 and moved != p and p.track_id == 4
    assert pickle.loads(pickle.dumps(p)) == p  # what a distributed evaluation gathers
    with pytest.raises(TypeError):
        hash(p)
    assert repr(p).startswith("PersonPose(K=3, box=[10.0, 20.0, 30.0, 40.0], box_score=0.9")


def test_triplets_and_annotation():
    p = person()
    np.testing.assert_array_equal(p.triplets(), np.column_stack([p.keypoints, p.scores]))
    assert p.triplets().flags.writeable
    a = p.to_annotation()
    np.testing.assert_array_equal(a.keypoints, p.triplets())
    np.testing.assert_array_equal(a.box, p.box)
    assert (a.track_id, a.score, a.head_box) == (4, 0.9, None)
    a.keypoints[0, 0] = -1  # the annotation's arrays are its own
    assert p.keypoints[0, 0] == 0


def test_from_dict_refuses_unknown_and_missing_fields():
    data = person().to_dict()
    with pytest.raises(KpdiffInputError, match=r"unknown fields \['keypoint'\]"):
        PersonPose.from_dict({**data, "keypoint": []})
    del data["box"]
    with pytest.raises(KpdiffInputError, match=r"missing fields \['box'\]"):
        PersonPose.from_dict(data)


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def records(draw: st.DrawFn) -> PersonPose:
    k = draw(st.integers(1, 20))

    def arr(*shape: int) -> np.ndarray:
        return np.array(draw(st.lists(finite, min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape))))).reshape(shape)  # fmt: skip

    maybe = st.booleans()
    return PersonPose(
        arr(k, 2), arr(k), arr(k) if draw(maybe) else None, arr(4),
        draw(finite), draw(st.none() | st.integers(-5, 1000)),
        video=draw(st.none() | st.text(max_size=8)),
        frame_index=draw(st.none() | st.integers(0, 10**6)),
        crop_keypoints=arr(k, 2) if draw(maybe) else None,
        gt_keypoints=arr(k, 3) if draw(maybe) else None,
        gt_track_id=draw(st.integers(-1, 1000)),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(records())
def test_to_dict_round_trips_through_json(p):
    data = json.loads(json.dumps(p.to_dict()))
    assert set(data) == {f.name for f in dataclasses.fields(PersonPose)}
    assert PersonPose.from_dict(data) == p


def test_batch_poses_maps_crop_to_image_and_undoes_a_flip(tmp_path):
    """A flipped clip's crop keypoints come back in the schema's joint order, and mapped to
    the image they give back the ground truth."""
    import cv2

    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), np.zeros((120, 160, 3), np.uint8))
    kpts = np.column_stack([np.linspace(40, 90, 17), np.linspace(30, 100, 17), np.ones(17)])
    sample = ClipSample("v", (str(frame),), 0, np.array([30.0, 20, 70, 90]), 0.8, 6, kpts, 3)
    augment = AugmentConfig(rotation=0, flip_prob=1.0, half_body_prob=0, scale_range=(1, 1))
    dataset = TopDownClipDataset([sample], augment=augment)
    torch.manual_seed(0)
    batch = default_collate([dataset[0]])
    assert batch["flipped"].all()
    crop = batch["keypoints"][..., :2]  # crop channel order: joints swapped by the flip
    result = SimpleNamespace(keypoints=crop, scores=torch.ones(1, 17), spread=torch.ones(1, 17))
    (p,) = batch_poses(batch, result)
    np.testing.assert_allclose(p.keypoints, kpts[:, :2], atol=1e-3)
    np.testing.assert_allclose(p.gt_keypoints, kpts, atol=1e-3)
    order = batch["joint_order"][0].numpy()
    np.testing.assert_allclose(p.crop_keypoints[order], crop[0].numpy())
    np.testing.assert_allclose(p.scores, 0.8)  # heatmap max × the box score
    pixel = abs(np.linalg.det(batch["inverse_affine"][0, :, :2].double().numpy())) ** 0.5
    np.testing.assert_allclose(p.spread, pixel, rtol=1e-6)  # crop pixels → image pixels
    assert (p.video, p.frame_index, p.track_id, p.gt_track_id) == ("v", 3, None, 6)
    assert (p.box_score, p.box.tolist()) == (pytest.approx(0.8), [30, 20, 70, 90])


def test_the_record_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, kpdiff.data.records; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
