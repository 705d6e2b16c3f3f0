"""Keypoint schemas: the built-in layouts, validation, user-defined bodies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff.data.schemas import COCO, POSETRACK, KeypointSchema, get_schema, register_schema
from kpdiff.errors import KpdiffInputError


def test_posetrack_layout():
    assert POSETRACK.keypoints[:5] == ("nose", "head_bottom", "head_top", "left_ear", "right_ear")
    assert POSETRACK.keypoints[5::2] == tuple(
        f"left_{p}" for p in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    )
    assert POSETRACK.num_keypoints == 17
    assert POSETRACK.flip_pairs == ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    assert len(POSETRACK.evaluated) == 15 and 3 not in POSETRACK.evaluated
    assert 4 not in POSETRACK.evaluated
    assert list(POSETRACK.eval_groups) == [
        "Head",
        "Shoulder",
        "Elbow",
        "Wrist",
        "Hip",
        "Knee",
        "Ankle",
    ]
    head = [POSETRACK.keypoints[i] for i in POSETRACK.eval_groups["Head"]]
    assert head == ["head_top", "head_bottom", "nose"]
    assert POSETRACK.eval_groups["Ankle"] == (15, 16)
    assert (15, 13) in POSETRACK.skeleton  # left_ankle - left_knee, 0-based


def test_coco_layout_and_lookup():
    assert COCO.keypoints[1:3] == ("left_eye", "right_eye") and (1, 2) in COCO.flip_pairs
    assert len(COCO.evaluated) == 17
    assert get_schema("PoseTrack") is POSETRACK and get_schema("coco") is COCO
    assert get_schema(COCO) is COCO
    with pytest.raises(KpdiffInputError, match=r"unknown keypoint schema 'mpii'.*'coco'"):
        get_schema("mpii")


def test_flip_permutation_mirrors():
    perm = POSETRACK.flip_permutation
    assert (perm[perm] == np.arange(17)).all()
    assert POSETRACK.keypoints[perm[POSETRACK.index("left_wrist")]] == "right_wrist"
    assert perm[0] == 0 and POSETRACK.index("head_top") == 2


def test_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        POSETRACK.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        POSETRACK.eval_groups["Head"] = (0,)  # type: ignore[index]
    assert hash(POSETRACK) == hash(get_schema("posetrack"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(flip_pairs=((0, 3),)), r"flip_pairs has indices \[3\] outside \[0, 3\)"),
        (dict(flip_pairs=((1, 1),)), "pairs point 1 with itself"),
        (dict(flip_pairs=((0, 1), (1, 2))), "not disjoint"),
        (dict(skeleton=((0, 7),)), "skeleton has indices"),
        (dict(eval_groups={"X": (0, 9)}), r"eval_groups\['X'\] has indices \[9\]"),
        (dict(eval_groups={"X": ()}), "is empty"),
        (
            dict(eval_groups={"X": (0,)}, evaluated=(1,)),
            "uses joints \\[0\\] that are not evaluated",
        ),
        (dict(evaluated=(0, 0)), "duplicate indices"),
        (dict(keypoints=("a", "a", "b")), "duplicate keypoint names"),
        (dict(keypoints=()), "must be non-empty"),
    ],
)
def test_validation(kwargs, message):
    args = dict(name="bad", keypoints=("a", "b", "c")) | kwargs
    with pytest.raises(KpdiffInputError, match=message):
        KeypointSchema(**args)


def test_user_defined_bodies():
    quadruped = KeypointSchema(  # the module docstring's example
        name="quadruped_test",
        keypoints=("nose", "withers", "tail_base", "lf_paw", "rf_paw", "lh_paw", "rh_paw"),
        flip_pairs=((3, 4), (5, 6)),
        skeleton=((0, 1), (1, 2), (1, 3), (1, 4), (2, 5), (2, 6)),
        eval_groups={"Head": (0,), "Front": (3, 4), "Hind": (5, 6)},
    )
    assert quadruped.evaluated == (0, 3, 4, 5, 6)
    assert register_schema(quadruped) is get_schema("Quadruped_Test")
    with pytest.raises(KpdiffInputError, match="already registered"):
        register_schema(dataclasses.replace(quadruped, flip_pairs=()))
    fingers = ("thumb", "index", "middle", "ring", "pinky")
    hand = KeypointSchema(
        name="hand",
        keypoints=("wrist", *(f"{f}{k}" for f in fingers for k in range(1, 5))),
        skeleton=tuple((0 if k == 0 else 1 + 4 * f + k - 1, 1 + 4 * f + k)
                       for f in range(5) for k in range(4)),
        eval_groups={f: tuple(range(1 + 4 * i, 5 + 4 * i)) for i, f in enumerate(fingers)},
    )  # fmt: skip
    assert hand.num_keypoints == 21 and hand.flip_pairs == () and len(hand.evaluated) == 20


@settings(max_examples=50, deadline=None)
@given(k=st.integers(2, 40), data=st.data())
def test_random_disjoint_pairs_give_an_involution(k, data):
    order = data.draw(st.permutations(range(k)))
    n_pairs = data.draw(st.integers(0, k // 2))
    pairs = tuple((order[2 * i], order[2 * i + 1]) for i in range(n_pairs))
    schema = KeypointSchema(name="r", keypoints=tuple(f"p{i}" for i in range(k)), flip_pairs=pairs)
    perm = schema.flip_permutation
    assert (perm[perm] == np.arange(k)).all()
    assert all(perm[a] == b for a, b in pairs)
