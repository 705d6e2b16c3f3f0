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


def test_a_weak_duplicate_box_does_not_take_the_person_s_id():
    """The case seen on a synthetic video: a low-score duplicate of a person's box for one
    frame; a few frames on, the person's box overlaps that old duplicate more than the
    person's own last box. The duplicate starts no track, so the person keeps id 0."""
    tracker = IoUTracker()
    person = np.array([[85.0, 85, 50, 149]])
    assert tracker.update(person, [0.9]).tolist() == [0]
    boxes = np.array([[85.0, 85, 50, 149], [94, 90, 37, 118]])
    first, duplicate = tracker.update(boxes, [0.9, 0.24]).tolist()
    assert first == 0 and duplicate not in (0,)
    for _ in range(3):
        assert tracker.update(person, [0.9]).tolist() == [0]
    assert tracker.update(np.array([[89.0, 88, 49, 120]]), [0.9]).tolist() == [0]
    # a weak box continues a track seen on the previous frame (ByteTrack's second stage)
    assert tracker.update(np.array([[88.0, 87, 49, 125]]), [0.3]).tolist() == [0]
    # and two confident people, one box each, keep their ids whatever the order of the boxes
    other = np.array([[300.0, 80, 40, 140]])
    ids = tracker.update(np.concatenate([other, person]), [0.8, 0.9]).tolist()
    assert ids[1] == 0 and ids[0] not in (0, duplicate)


def test_a_lost_track_is_matched_after_the_previous_frame_s():
    tracker = IoUTracker(max_missed=5)
    old = np.array([[0.0, 0, 40, 100]])
    tracker.update(old)  # id 0, then lost
    tracker.update(np.zeros((0, 4)))
    near = np.array([[6.0, 0, 40, 100]])
    assert tracker.update(near).tolist() == [0]  # the lost track comes back


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
        ({"high_score": 2}, None, "high_score"),
    ],
)
def test_bad_input_is_named(kwargs, boxes, name):
    with pytest.raises(KpdiffInputError, match=name):
        IoUTracker(**kwargs).update(boxes if boxes is not None else np.zeros((0, 4)))


def test_bad_scores_are_named():
    with pytest.raises(KpdiffInputError, match="scores: expected 1 finite numbers"):
        IoUTracker().update(np.zeros((1, 4)), [0.5, 0.5])
    with pytest.raises(KpdiffInputError, match="scores"):
        IoUTracker().update(np.zeros((1, 4)), [np.nan])
