"""draw_poses: edges and joints where the poses say, nothing under min_score, bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from kpdiff import KpdiffInputError, draw_poses
from kpdiff.data import POSETRACK

EDGES = [(0, 1)]


def blank() -> np.ndarray:
    return np.zeros((60, 80, 3), np.uint8)


def test_an_edge_and_its_joints_are_drawn_where_the_pose_says():
    pose = np.array([[10.0, 20.0, 0.9], [60.0, 20.0, 0.9]])
    out = draw_poses(blank(), pose, EDGES)
    assert out[20, 35].any()  # on the line between the joints
    assert out[20, 12].any() and out[20, 58].any()  # the joints' circles
    assert not out[45:, :].any()  # nothing far from the pose


def test_low_scores_hide_the_joint_and_its_edges_and_the_input_is_not_touched():
    image = blank()
    pose = np.array([[10.0, 20.0, 0.9], [60.0, 20.0, 0.1]])
    out = draw_poses(image, pose, EDGES, min_score=0.2)
    assert not out[20, 35].any() and not out[15:26, 55:66].any()
    assert out[20, 12].any()
    assert not image.any()  # copy=True by default


def test_spread_grows_the_circle_and_track_ids_pick_the_colour():
    pose = np.array([[[40.0, 30.0, 1.0], [-5.0, -5.0, 1.0]]])  # joint 1 off the image
    small = draw_poses(blank(), pose, [], spread=np.array([[0.0, 0.0]]))
    large = draw_poses(blank(), pose, [], spread=np.array([[10.0, 0.0]]))
    assert not small[30, 50].any() and large[30, 52].any()  # radius 2 vs 12
    two = np.array([[[10.0, 10.0, 1.0], [70.0, 10.0, 1.0]]])
    a = draw_poses(blank(), two, EDGES, track_ids=[0])[10, 40]
    b = draw_poses(blank(), two, EDGES, track_ids=[1])[10, 40]
    assert a.any() and b.any() and not np.array_equal(a, b)


def test_a_schema_gives_its_skeleton():
    """Every edge of the schema's skeleton is drawn (its midpoint is coloured), and with
    copy=False into the given image."""
    k = POSETRACK.num_keypoints
    angle = np.linspace(0, 2 * np.pi, k, endpoint=False)  # joints on a circle: edges apart
    pose = np.stack([200 + 150 * np.cos(angle), 200 + 150 * np.sin(angle), np.ones(k)], -1)
    image = np.zeros((400, 400, 3), np.uint8)
    out = draw_poses(image, pose[None], POSETRACK, copy=False)
    assert out is image and POSETRACK.skeleton
    for i, j in POSETRACK.skeleton:
        x, y = np.round((pose[i, :2] + pose[j, :2]) / 2).astype(int)
        assert out[y, x].any(), (POSETRACK.keypoints[i], POSETRACK.keypoints[j])
    assert not out[200, 200].any()  # the centre: no edge of this skeleton crosses it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 4))}, "image: expected an \\[H, W, 3\\]"),
        ({"poses": np.zeros((2, 2))}, "poses: expected \\[P, K, 3\\]"),
        ({"spread": np.zeros((1, 3))}, "spread: expected \\[1, 2\\]"),
        ({"track_ids": [1, 2]}, "track_ids: expected 1 ids"),
        ({"schema": [(0, 5)]}, "schema: its skeleton names joints outside 0…1"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    args = {"image": blank(), "poses": np.ones((1, 2, 3)), "schema": EDGES} | kwargs
    with pytest.raises(KpdiffInputError, match=match):
        draw_poses(args.pop("image"), args.pop("poses"), args.pop("schema"), **args)
