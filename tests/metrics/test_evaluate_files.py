"""``evaluate_files`` reads files straight into arrays: it must give what the object path gives.

The object path is ``posetrack_ap(read_posetrack(gt, order="listing"), read_posetrack(pred,
predictions=True))``; both must agree on every AP and on every error message, including which
error is reported when a video has several.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpdiff.data.posetrack import read_posetrack, write_posetrack18, write_posetrack18_predictions
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError
from kpdiff.metrics import evaluate_files, posetrack_ap


def make_set(rng: np.random.Generator, n_videos: int = 3, n_frames: int = 6):
    """Crowded frames (persons overlap, so matching is contested), unlabelled frames, frames
    without persons, ignore regions, joints at the origin, persons without joints or head box."""
    gts, preds = [], []
    for v in range(n_videos):
        name = f"{v:06d}_mpii_test"
        g, p = VideoAnnotation(name), VideoAnnotation(name)
        for f in range(n_frames):
            path, iid = f"images/val/{name}/{f:06d}.jpg", 1000 * v + f
            people = []
            for t in range(rng.integers(0, 5)):
                kp = np.column_stack([rng.uniform(0, 120, (17, 2)).round(1), np.ones(17)])
                kp[rng.random(17) < 0.2] = 0
                x, y = rng.uniform(0, 100, 2).round(1)
                head = np.array([x, y, x + rng.integers(0, 20), y + rng.integers(0, 20)], float)
                if rng.random() < 0.1:
                    kp[:] = 0  # a person without joints needs no head box
                    head = None
                people.append(PersonAnnotation(kp, head_box=head, track_id=t))
            dets = []
            for t in range(rng.integers(0, 6)):
                d = np.column_stack([rng.uniform(0, 120, (17, 2)).round(1), rng.random(17)])
                if people and rng.random() < 0.6:
                    src = people[rng.integers(len(people))].keypoints
                    d[:, :2] = src[:, :2] + rng.integers(-3, 4, (17, 2))
                d[rng.random(17) < 0.15] = 0
                d[rng.random(17) < 0.2, 2] = 0.5  # equal scores
                dets.append(PersonAnnotation(d, track_id=t))
            regions = []
            if rng.random() < 0.3:
                regions = [rng.uniform(0, 120, (int(rng.integers(3, 7)), 2)).round(0)]
            labeled = bool(rng.random() < 0.8)
            g.frames.append(FrameAnnotation(path, f, iid, labeled, people, regions))
            p.frames.append(FrameAnnotation(path, f, iid, labeled, dets))
        gts.append(g)
        preds.append(p)
    return gts, preds


def write_set(tmp: Path, gts, preds) -> tuple[Path, Path]:
    for g, p in zip(gts, preds, strict=True):
        write_posetrack18(g, tmp / "gt" / f"{g.name}.json")
        write_posetrack18_predictions(p, tmp / "pred" / f"{p.name}.json")
    return tmp / "gt", tmp / "pred"


def object_path(gt_dir: Path, pred_dir: Path, **kw):
    gt = read_posetrack(gt_dir, order="listing")
    return posetrack_ap(gt, read_posetrack(pred_dir, predictions=True), **kw)


def same_outcome(gt_dir: Path, pred_dir: Path, **kw) -> None:
    """Both paths give the same APs, or raise the same message."""
    try:
        want = object_path(gt_dir, pred_dir, **kw).to_dict()
    except KpdiffInputError as e:
        with pytest.raises(KpdiffInputError) as got:
            evaluate_files(gt_dir, pred_dir, **kw)
        assert str(got.value) == str(e)
        return
    assert evaluate_files(gt_dir, pred_dir, **kw).to_dict() == want


@pytest.mark.parametrize("seed", range(12))
def test_files_equal_objects(tmp_path, seed):
    gt_dir, pred_dir = write_set(tmp_path, *make_set(np.random.default_rng(seed)))
    same_outcome(gt_dir, pred_dir)
    same_outcome(gt_dir, pred_dir, frames="labeled")
    same_outcome(gt_dir, pred_dir, threshold=0.3)


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_shuffled_annotations_unflagged_images_and_merged_files(tmp_path):
    gts, preds = make_set(np.random.default_rng(5), n_videos=4)
    gt_dir, pred_dir = write_set(tmp_path, gts, preds)
    rng = np.random.default_rng(0)

    def shuffle(data):  # persons listed out of frame order; frames without the flag
        data["annotations"] = [
            data["annotations"][i] for i in rng.permutation(len(data["annotations"]))
        ]
        for im in data["images"][::2]:
            del im["is_labeled"]

    for f in [*gt_dir.iterdir(), *pred_dir.iterdir()]:
        edit(f, shuffle)
    # two prediction videos merged into one file: one video per image folder
    a, b = sorted(pred_dir.iterdir())[:2]
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    merged = {
        "images": da["images"] + db["images"],
        "annotations": db["annotations"] + da["annotations"],
        "categories": da["categories"],
    }
    a.unlink()
    b.unlink()
    (pred_dir / "merged.json").write_text(json.dumps(merged))
    same_outcome(gt_dir, pred_dir)
    ref = object_path(gt_dir, pred_dir)
    assert evaluate_files(gt_dir, pred_dir).to_dict() == ref.to_dict()


def video_file(d: Path, v: int = 0) -> Path:
    return sorted(d.iterdir())[v]


def test_errors_match_the_object_path(tmp_path):
    gts, preds = make_set(np.random.default_rng(1), n_videos=2)
    for v in gts:  # every frame evaluated, with joints and head boxes
        for i, f in enumerate(v.frames):
            f.is_labeled = True
            kp = np.column_stack([np.full((17, 2), 10.0 + i), np.ones(17)])
            f.persons = [
                PersonAnnotation(kp.copy(), head_box=np.array([0, 0, 9.0, 9]), track_id=t)
                for t in range(2)
            ]

    def drop_last(d):
        last = d["images"].pop()["id"]
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != last]

    def dup(d):
        d["annotations"][1]["track_id"] = d["annotations"][0]["track_id"]

    def region(d):
        d["images"][2].update(ignore_regions_x=[[1, 2]], ignore_regions_y=[[1, 2]])

    cases = [
        ("gt", dup, r"frame 0 .*ground truth: duplicate track ids \[0\]"),
        ("pred", lambda d: [a.update(track_id=7) for a in d["annotations"]], "prediction: dup"),
        ("pred", lambda d: d["images"][4].update(id=12345), "frame 4 .*image id 12345"),
        ("gt", lambda d: d["annotations"][3].pop("bbox_head"), "frame 1 .*person 1: head_box"),
        ("gt", region, "frame 2 .*ignore region 0 is not a polygon"),
        ("pred", drop_last, "prediction has 5 frames, ground truth 6"),
    ]
    for n, (side, change, message) in enumerate(cases):
        gt_dir, pred_dir = write_set(tmp_path / str(n), gts, preds)
        edit(video_file(gt_dir if side == "gt" else pred_dir, n % 2), change)
        with pytest.raises(KpdiffInputError, match=message):
            object_path(gt_dir, pred_dir)
        same_outcome(gt_dir, pred_dir)

    def renumber(d):  # frame 5's prediction gets another image id
        old, d["images"][5]["id"] = d["images"][5]["id"], 99999
        for a in d["annotations"]:
            if a["image_id"] == old:
                a["image_id"] = 99999

    # several errors in one video: the first in frame order wins, then the order of the checks
    root = tmp_path / "many"
    gt_dir, pred_dir = write_set(root, gts, preds)
    for side, change in [
        ("gt", lambda d: d["images"][3].update(ignore_regions_x=[[1]], ignore_regions_y=[[1]])),
        ("gt", lambda d: d["annotations"][7].pop("bbox_head")),  # frame 3
        ("pred", renumber),
    ]:
        edit(video_file(gt_dir if side == "gt" else pred_dir), change)
    with pytest.raises(KpdiffInputError, match=r"frame 3 .*person 1: head_box is missing"):
        evaluate_files(gt_dir, pred_dir)
    same_outcome(gt_dir, pred_dir)


def test_no_frame_and_no_video(tmp_path):
    gts, preds = make_set(np.random.default_rng(2), n_videos=2)
    for v in gts:
        for f in v.frames:
            f.persons = []
    gt_dir, pred_dir = write_set(tmp_path, gts, preds)
    with pytest.raises(KpdiffInputError, match="no frame to evaluate"):
        evaluate_files(gt_dir, pred_dir)
    same_outcome(gt_dir, pred_dir)
    video_file(pred_dir).unlink()
    with pytest.raises(KpdiffInputError, match="no prediction video"):
        evaluate_files(gt_dir, pred_dir)
    same_outcome(gt_dir, pred_dir)
