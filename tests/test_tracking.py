"""IoUTracker: stable ids for people that move a little, new ids for new people, ids kept over
short gaps, one id per box within a frame; bad boxes are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff.errors import KpdiffInputError
from kpdiff.tracking import IoUTracker, box_iou


def test_box_iou_known_values():
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[0.0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])


def test_people_keep_their_ids_while_they_move_and_swap_order():
    tracker = IoUTracker()
    left, right = np.array([0.0, 0, 20, 40]), np.array([100.0, 0, 20, 40])
    assert tracker.update(np.stack([left, right])).tolist() == [0, 1]
    for step in range(1, 6):  # both walk right; the detector lists them in either order
        shift = np.array([2.0 * step, 0, 0, 0])
        boxes = np.stack([right + shift, left + shift])
        assert tracker.update(boxes).tolist() == [1, 0]


def test_a_new_person_gets_a_new_id_and_a_short_gap_keeps_the_id():
    tracker = IoUTracker(max_missed=2)
    a, b = np.array([[0.0, 0, 20, 40]]), np.array([[200.0, 0, 20, 40]])
    assert tracker.update(a).tolist() == [0]
    assert tracker.update(np.zeros((0, 4))).tolist() == []  # missed once
    assert tracker.update(np.concatenate([a, b])).tolist() == [0, 1]
    for _ in range(3):  # a gone for longer than max_missed
        tracker.update(b)
    assert tracker.update(np.concatenate([a, b])).tolist() == [2, 1]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0, 80), st.floats(0, 80)),
            max_size=6,
        ),
        max_size=8,
    )
)
def test_ids_are_distinct_within_a_frame(frames):
    tracker = IoUTracker()
    for boxes in frames:
        ids = tracker.update(np.array(boxes, np.float64).reshape(-1, 4))
        assert len(set(ids.tolist())) == len(ids) and (ids >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "boxes", "name"),
    [
        ({"min_iou": 0}, None, "min_iou"),
        ({"max_missed": -1}, None, "max_missed"),
        ({}, np.zeros((2, 3)), "boxes"),
        ({}, np.array([[0, 0, np.nan, 1.0]]), "boxes"),
    ],
)
def test_bad_input_is_named(kwargs, boxes, name):
    with pytest.raises(KpdiffInputError, match=name):
        IoUTracker(**kwargs).update(boxes if boxes is not None else np.zeros((0, 4)))
