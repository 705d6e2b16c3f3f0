"""PoseTrack AP: hand-computed cases of poseval's matching and AP, invariances, errors."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff.data.posetrack import MISSING_SCORE, read_posetrack
from kpdiff.data.schemas import POSETRACK, KeypointSchema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.metrics import PoseTrackAP, posetrack_ap, posetrack_match

SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample",
    )
)

# A 4-joint body keeps hand computations short: columns AB = mean(a, b), CD = mean(c, d).
TOY = KeypointSchema(
    name="toy", keypoints=("a", "b", "c", "d"), eval_groups={"AB": (0, 1), "CD": (2, 3)}
)
# Head box 30 x 40: diagonal 50, headSize = 0.6 * 50 = 30, a joint is correct within 15 px.
HEAD = np.array([0.0, 0.0, 30.0, 40.0])
ROW0 = [(100, 100), (200, 100), (300, 100), (400, 100)]
FAR = [(5000, 5000)] * 4


def gt(xy, track=None, head=HEAD):
    """GT person: ``xy`` rows ``(x, y)`` or ``None`` (absent)."""
    kp = np.array([(0, 0, 0) if p is None else (*p, 1) for p in xy], np.float64)
    return PersonAnnotation(keypoints=kp, head_box=None if head is None else np.asarray(head),
                            track_id=track)  # fmt: skip


def pr(xy, score=0.5):
    """Predicted person: ``(x, y, score)`` rows; ``None`` rows are absent."""
    s = np.broadcast_to(score, (len(xy),))
    kp = np.array([(0, 0, 0) if p is None else (*p, s[i]) for i, p in enumerate(xy)], np.float64)
    return PersonAnnotation(keypoints=kp)


def videos(frames, name="v", labeled=None):
    """``frames``: list of ``(gt persons, predicted persons[, ignore regions])``."""
    g, p = VideoAnnotation(name), VideoAnnotation(name)
    for i, fr in enumerate(frames):
        lab = True if labeled is None else labeled[i]
        regions = [np.asarray(r, np.float64) for r in (fr[2] if len(fr) > 2 else [])]
        g.frames.append(FrameAnnotation(f"{name}/{i:06d}.jpg", i, i, lab, list(fr[0]), regions))
        p.frames.append(FrameAnnotation(f"{name}/{i:06d}.jpg", i, i, lab, list(fr[1])))
    return [g], [p]


def toy_ap(frames, **kw):
    return posetrack_ap(*videos(frames, **kw), schema=TOY)


# ------------------------------------------------------------------ hand-computed cases


def test_head_size_threshold_boundary_is_inclusive():
    assert 0.6 * 50.0 == 30.0  # the threshold below is exactly 15 px
    pred = pr([(115, 100), (200, 115.001), (309, 112), None])
    # a: 15 px away = 0.5 headSize -> correct; b: just over -> wrong; c: (9, 12) -> 15 px, correct;
    # d: not predicted. pck = 2/4 > 0, so the prediction is matched to the GT.
    r = toy_ap([([gt(ROW0)], [pred])])
    # a, c: one TP, 1 GT -> AP 100. b: one FP, 1 GT -> 0. d: no detection at all -> 0.
    assert r.joints == {"a": 100.0, "b": 0.0, "c": 100.0, "d": 0.0}
    assert r.columns == {"AB": 50.0, "CD": 50.0, "Mean": 50.0}


@pytest.mark.parametrize("a_first, expected", [(True, 25.0), (False, 50.0)])
def test_two_predictions_of_one_gt_first_wins_and_the_other_is_false_positive(a_first, expected):
    row1 = [(x, 500) for x, _ in ROW0]
    a, b = pr(ROW0, 0.9), pr(ROW0, 0.95)  # both exact copies of GT0: pck 1.0 each (a tie)
    preds = [a, b] if a_first else [b, a]
    r = toy_ap([([gt(ROW0, 0), gt(row1, 1)], preds)])
    # Each joint has nGT = 2 (GT1 is never predicted). The first prediction in the frame wins GT0.
    # a first: ranked b (0.95, FP), a (0.9, TP): precision [0, 1/2], recall [0, 1/2];
    #   envelope 1/2 up to recall 1/2 -> AP = 1/2 * 1/2 = 25.
    # b first: ranked b (TP), a (FP): precision [1, 1/2], recall [1/2, 1/2] -> AP = 1/2 * 1 = 50.
    assert r.joints == dict.fromkeys("abcd", expected)
    assert r.columns["Mean"] == expected


def test_prediction_keeps_its_best_gt_then_loses_it_and_stays_unmatched():
    gt0 = gt([(100, 100), (200, 100), (300, 100), (400, 100)], 0)
    gt1 = gt([(100, 100), (200, 100), (600, 100), (900, 100)], 1)
    p0 = pr([(100, 100), (200, 100), (600, 100), (2000, 2000)], 0.8)  # pck: GT0 2/4, GT1 3/4
    p1 = pr([(100, 100), (200, 100), (600, 100), (900, 100)], 0.6)  # pck: GT0 2/4, GT1 4/4
    r = toy_ap([([gt0, gt1], [p0, p1])])
    # Both predictions keep GT1 (their best); GT1 takes p1 (1.0 > 0.75). p0 is NOT re-assigned
    # to the free GT0: all 4 of its joints are FPs. Per joint: nGT = 2, ranked p0 (0.8, FP),
    # p1 (0.6, TP) -> precision [0, 1/2], recall [0, 1/2] -> AP 25.
    assert r.joints == dict.fromkeys("abcd", 25.0)


def test_joint_without_gt_is_nan_and_joint_without_detection_is_zero():
    # GT lacks d, prediction has it: d has one FP and no GT -> NaN (recall 0/0), like poseval.
    r = toy_ap([([gt([*ROW0[:3], None])], [pr(ROW0)])])
    assert r.joints["a"] == r.joints["b"] == r.joints["c"] == 100.0
    assert math.isnan(r.joints["d"])
    assert r.columns["AB"] == 100.0 and math.isnan(r.columns["CD"])  # columns propagate NaN
    assert r.columns["Mean"] == 100.0  # Mean skips NaN joints
    # GT has d, prediction lacks it: d has no detection -> 0, and 0 counts in the Mean.
    r = toy_ap([([gt(ROW0)], [pr([*ROW0[:3], None])])])
    assert r.joints["d"] == 0.0 and r.columns["CD"] == 50.0 and r.columns["Mean"] == 75.0


def test_ignore_regions_remove_strictly_inside_joints_of_gt_and_predictions():
    square = [(0, 0), (50, 0), (50, 50), (0, 50)]
    xy = [(10, 10), (50, 25), (300, 300), (400, 400)]  # a inside, b on the boundary (kept)
    fp = pr([(20, 20), None, None, None], 0.99)  # its only joint is inside: removed entirely
    r = toy_ap([([gt(xy)], [pr(xy), fp], [square])])
    # a: GT and prediction removed -> no detection -> 0 (had the FP's `a` survived, NaN).
    # b, c, d: one TP each -> 100. Mean = (0 + 300) / 4.
    assert r.joints == {"a": 0.0, "b": 100.0, "c": 100.0, "d": 100.0}
    assert r.columns == {"AB": 50.0, "CD": 100.0, "Mean": 75.0}


def test_missing_score_ranks_last():
    r = toy_ap([([gt(ROW0)], [pr(ROW0, MISSING_SCORE), pr(FAR, 0.1)])])
    # Per joint, nGT = 1: ranked FP (0.1), TP (-9999): precision [0, 1/2], recall [0, 1]
    # -> envelope 1/2 over recall (0, 1] -> AP 50.
    assert r.joints == dict.fromkeys("abcd", 50.0)


def test_only_labelled_frames_with_persons_count():
    square = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]
    inside = [(x, y + 300) for x, y in ROW0]
    frames = [
        ([gt(ROW0)], [pr(ROW0, 0.9)]),  # TP
        ([], [pr(ROW0, 0.99)]),  # not labelled: its prediction is dropped
        ([], [pr(ROW0, 0.99)]),  # labelled but no GT person: dropped too
        ([gt(inside)], [pr(inside), pr(FAR, 0.95)], [square]),  # GT all ignored: FAR is a FP
    ]
    r = toy_ap(frames, labeled=[True, False, True, True])
    # Per joint, nGT = 1: ranked FP (0.95), TP (0.9) -> precision [0, 1/2], recall [0, 1] -> 50.
    assert r.joints == dict.fromkeys("abcd", 50.0)


def test_zero_head_size_never_matches():
    r = toy_ap([([gt(ROW0, head=[5, 5, 5, 5])], [pr(ROW0)])])
    assert r.joints == dict.fromkeys("abcd", 0.0)


def test_posetrack_columns_and_table():
    kp = np.column_stack([np.arange(17) * 20.0 + 100, np.full(17, 300.0), np.ones(17)])
    kp[3:5] = 0  # ears absent
    pred = kp.copy()
    pred[9:11, 0] += 100  # both wrists wrong
    g, p = videos([([PersonAnnotation(kp, head_box=HEAD)], [PersonAnnotation(pred)])])
    r = posetrack_ap(g, p)
    assert list(r.joints) == [POSETRACK.keypoints[j] for j in POSETRACK.evaluated]
    assert r.joints["left_wrist"] == r.joints["right_wrist"] == 0.0
    assert r.columns["Wrist"] == 0.0 and r.columns["Head"] == 100.0
    assert r.columns["Mean"] == pytest.approx(13 / 15 * 100)
    assert r.table().splitlines() == [
        " Head  Shoulder  Elbow  Wrist    Hip   Knee  Ankle   Mean",
        "100.0     100.0  100.0    0.0  100.0  100.0  100.0   86.7",
    ]


def test_result_serialisation(tmp_path):
    r = PoseTrackAP(joints={"a": 50.0, "d": math.nan}, columns={"AB": 50.0, "Mean": 50.0})
    assert r.to_dict() == {"joints": {"a": 50.0, "d": None}, "columns": {"AB": 50.0, "Mean": 50.0}}
    assert json.loads(r.to_json()) == r.to_dict()
    assert json.loads(r.save_json(tmp_path / "out" / "ap.json").read_text()) == r.to_dict()
    assert "n/a" not in r.table() and "50.0" in r.table()


# ------------------------------------------------------------------ random sets


def random_set(rng, n_videos=3, n_frames=4, noise=2.0, dup=False):
    """Separated people (one per 300 px cell), predictions = GT + noise, far false positives."""
    gts, preds = [], []
    for v in range(n_videos):
        g, p = VideoAnnotation(f"vid{v}"), VideoAnnotation(f"vid{v}")
        for f in range(n_frames):
            cells = rng.permutation(16)[: rng.integers(1, 5)]
            people, dets = [], []
            for t, c in enumerate(cells):
                center = np.array([c % 4, c // 4]) * 300.0 + 150
                kp = np.column_stack([center + rng.uniform(-40, 40, (17, 2)), np.ones(17)])
                kp[3:5] = 0
                kp[rng.random(17) < 0.1] = 0
                people.append(
                    PersonAnnotation(kp, head_box=center[[0, 1, 0, 1]] + HEAD, track_id=t)
                )
                for _ in range(1 + int(dup and rng.random() < 0.3)):
                    if rng.random() < 0.9:
                        d = kp.copy()
                        d[:, :2] += rng.normal(0, noise, (17, 2))
                        d[:, 2] = rng.random(17)
                        d[kp[:, 2] == 0] = 0
                        dets.append(PersonAnnotation(d, track_id=len(dets)))
            for _ in range(rng.integers(0, 3)):
                fp = np.column_stack([rng.uniform(3000, 4000, (17, 2)), rng.random(17)])
                dets.append(PersonAnnotation(fp, track_id=len(dets)))
            g.frames.append(FrameAnnotation(f"vid{v}/{f:06d}.jpg", f, 100 * v + f, True, people))
            p.frames.append(FrameAnnotation(f"vid{v}/{f:06d}.jpg", f, 100 * v + f, True, dets))
        gts.append(g)
        preds.append(p)
    return gts, preds


def as_prediction(videos_):
    out = []
    for v in videos_:
        frames = [
            FrameAnnotation(f.image_path, f.frame_index, f.image_id, f.is_labeled,
                            [PersonAnnotation(np.where(p.keypoints[:, 2:] > 0, p.keypoints, 0))
                             for p in f.persons])
            for f in v.frames
        ]  # fmt: skip
        out.append(VideoAnnotation(v.name, frames))
    return out


def test_gt_as_prediction_gives_100():
    g, _ = random_set(np.random.default_rng(0), n_videos=4, n_frames=6)
    r = posetrack_ap(g, as_prediction(g))
    assert set(r.joints.values()) == {100.0} and r.columns["Mean"] == 100.0


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="PoseTrack18 sample not available")
@pytest.mark.parametrize("folder", ["annotations/val", "annotations_pt17/val"])
def test_real_sample_gt_as_prediction_gives_100(folder):
    g = read_posetrack(SAMPLE / folder)
    r = posetrack_ap(g, read_posetrack(SAMPLE / folder, predictions=True))
    assert set(r.columns.values()) == {100.0}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_invariant_to_person_and_file_order(seed):
    rng = np.random.default_rng(seed)
    g, p = random_set(rng, noise=float(rng.choice([1.0, 6.0, 12.0])))
    ref = posetrack_ap(g, p)
    for v in g + p:
        for f in v.frames:
            f.persons = [f.persons[i] for i in rng.permutation(len(f.persons))]
    order = rng.permutation(len(g))
    shuffled = posetrack_ap([g[i] for i in order], [p[i] for i in rng.permutation(len(p))])
    for key in ref.joints:
        assert shuffled.joints[key] == pytest.approx(ref.joints[key], abs=1e-9, nan_ok=True)
    assert shuffled.columns == pytest.approx(ref.columns, abs=1e-9, nan_ok=True)


def test_more_noise_never_raises_ap_on_average():
    means = []
    for noise in (1.0, 4.0, 8.0, 16.0):
        aps = [posetrack_ap(*random_set(np.random.default_rng(s), noise=noise, dup=True))
               for s in range(6)]  # fmt: skip
        means.append(np.mean([a.columns["Mean"] for a in aps]))
    assert all(a >= b for a, b in itertools.pairwise(means)), means
    assert means[0] > means[-1] + 20


def test_chunking_does_not_change_the_result(monkeypatch):
    g, p = random_set(np.random.default_rng(3), n_videos=3, n_frames=5, dup=True)
    ref = posetrack_ap(g, p)
    monkeypatch.setattr(posetrack_match, "_CHUNK_ELEMS", 1)  # one frame per chunk
    assert posetrack_ap(g, p).to_dict() == ref.to_dict()


def test_posetrack21_frames_with_boxes_only_are_skipped():
    g, _ = random_set(np.random.default_rng(1), n_videos=1, n_frames=3)
    box_only = PersonAnnotation(np.zeros((17, 3)), box=np.array([0, 0, 50, 90.0]), track_id=0)
    g[0].frames.append(FrameAnnotation("vid0/000003.jpg", 3, 3, False, [box_only]))
    p = as_prediction(g)
    p[0].frames[-1].persons = [PersonAnnotation(np.full((17, 3), 7.0))]  # would be a FP
    assert posetrack_ap(g, p, frames="labeled").columns["Mean"] == 100.0
    # poseval's rule counts the unlabelled frame with a person: its prediction is a FP
    assert posetrack_ap(g, p).columns["Mean"] < 100.0


# ------------------------------------------------------------------ errors


def test_error_no_prediction_video():
    g, p = videos([([gt(ROW0)], [pr(ROW0)])], name="gtname")
    p[0].name = "other"
    with pytest.raises(KpdiffInputError, match="video 'gtname': no prediction video"):
        posetrack_ap(g, p, TOY)


def test_error_frame_count_mismatch():
    g, p = videos([([gt(ROW0)], [pr(ROW0)]), ([gt(ROW0)], [])])
    p[0].frames.pop()
    with pytest.raises(
        KpdiffInputError, match="video 'v': prediction has 1 frames, ground truth 2"
    ):
        posetrack_ap(g, p, TOY)


def test_error_image_ids_differ():
    g, p = videos([([gt(ROW0)], [pr(ROW0)]), ([gt(ROW0)], [])])
    p[0].frames[1].image_id = 77
    with pytest.raises(KpdiffInputError, match=r"video 'v', frame 1 .*image id 77"):
        posetrack_ap(g, p, TOY)


@pytest.mark.parametrize("side", ["ground truth", "prediction"])
def test_error_duplicate_track_ids(side):
    g, p = videos([([gt(ROW0, 3), gt(FAR, 4)], [pr(ROW0), pr(FAR)])])
    target = g if side == "ground truth" else p
    for person in target[0].frames[0].persons:
        person.track_id = 3
    with pytest.raises(KpdiffInputError, match=rf"video 'v', frame 0 .*{side}: duplicate track"):
        posetrack_ap(g, p, TOY)


def test_error_bad_keypoints_missing_head_box_bad_region_duplicate_video():
    g, p = videos([([gt(ROW0)], [pr(ROW0)])])
    p[0].frames[0].persons[0].keypoints = np.zeros((5, 3))
    with pytest.raises(KpdiffInputError, match=r"frame 0 .*prediction, person 0: keypoints"):
        posetrack_ap(g, p, TOY)
    g, p = videos([([gt(ROW0)], [pr(ROW0)])])
    g[0].frames[0].persons[0].keypoints[1, 0] = np.nan
    with pytest.raises(KpdiffInputError, match="ground truth, person 0: keypoints must be finite"):
        posetrack_ap(g, p, TOY)
    g, p = videos([([gt(ROW0, head=None)], [pr(ROW0)])])
    with pytest.raises(KpdiffInputError, match="person 0: head_box is missing"):
        posetrack_ap(g, p, TOY)
    g, p = videos([([gt(ROW0)], [pr(ROW0)], [[(0, 0), (1, 1)]])])
    with pytest.raises(KpdiffInputError, match=r"frame 0 .*ignore region 0 is not a polygon"):
        posetrack_ap(g, p, TOY)
    g, p = videos([([gt(ROW0)], [pr(ROW0)])])
    with pytest.raises(KpdiffInputError, match="video 'v' appears twice"):
        posetrack_ap(g + g, p, TOY)


def test_missing_head_box_error_says_what_the_reference_size_is():
    """A body without a head (a hand, say) still needs a box per GT person: the error says so,
    on one line, and names the synthetic generator's knob."""
    g, p = videos([([gt(ROW0), gt(ROW0, head=None)], [pr(ROW0)])])
    with pytest.raises(KpdiffInputError, match="person 1: head_box is missing") as err:
        posetrack_ap(g, p, TOY)
    message = str(err.value)
    assert "\n" not in message
    for words in ("reference size", "bbox_head", "FigureRig.head", "docs/data.md"):
        assert words in message
    # a GT person without joints needs no reference size: no error, and the same AP
    empty = gt([None] * 4, head=None)
    assert toy_ap([([gt(ROW0), empty], [pr(ROW0)])]) == toy_ap([([gt(ROW0)], [pr(ROW0)])])
