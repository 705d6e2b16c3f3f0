"""PoseTrack readers/writers and detector boxes: real sample files, round trips, bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import kpdiff.io
from kpdiff.data.detections import boxes_for_frame, image_key, read_detections
from kpdiff.data.posetrack import (
    MISSING_SCORE,
    detect_format,
    read_posetrack,
    read_posetrack17,
    read_posetrack18,
    read_posetrack21,
    write_posetrack18,
    write_posetrack18_predictions,
)
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffInputError

SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample",
    )
)
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="PoseTrack18 sample not available")
NAMES = ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"]


def assert_same_video(a: VideoAnnotation, b: VideoAnnotation, *, image_ids: bool = True) -> None:
    assert a.name == b.name and len(a.frames) == len(b.frames)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert (fa.image_path, fa.frame_index, fa.is_labeled) == (
            fb.image_path,
            fb.frame_index,
            fb.is_labeled,
        )
        assert not image_ids or fa.image_id == fb.image_id
        assert len(fa.ignore_regions) == len(fb.ignore_regions)
        for ra, rb in zip(fa.ignore_regions, fb.ignore_regions, strict=True):
            np.testing.assert_array_equal(ra, rb)
        assert len(fa.persons) == len(fb.persons)
        for pa, pb in zip(fa.persons, fb.persons, strict=True):
            np.testing.assert_array_equal(pa.keypoints, pb.keypoints)
            np.testing.assert_array_equal(pa.head_box, pb.head_box)
            assert pa.track_id == pb.track_id


# ------------------------------------------------------------------ the real sample


@needs_sample
def test_sample_posetrack18_reads_correctly():
    videos = read_posetrack(SAMPLE / "annotations" / "val")
    assert [v.name for v in videos] == NAMES
    labelled = [f for v in videos for f in v.frames if f.is_labeled]
    assert sum(len(f.persons) for f in labelled) == 14
    assert [len(f.ignore_regions) for f in labelled] == [9, 2, 4]
    f = videos[0].frames[0]
    assert (f.image_path, f.frame_index, f.image_id) == (
        "images/val/003418_mpii_test/000000.jpg", 0, 10034180000,
    )  # fmt: skip
    assert f.ignore_regions[0].shape == (66, 2) and f.ignore_regions[0][1].tolist() == [1, 647]
    p = f.persons[0]
    assert p.keypoints.shape == (17, 3) and p.track_id == 0
    np.testing.assert_array_equal(p.head_box, [346, 337, 642, 574])  # xywh 346 337 296 237
    np.testing.assert_array_equal(p.keypoints[0], [621, 471, 1])  # nose
    np.testing.assert_array_equal(p.keypoints[3:5], 0)  # ears never labelled
    assert all(q.head_box is not None and q.box is not None for g in labelled for q in g.persons)
    assert detect_format(SAMPLE / "annotations/val/003418_mpii_test.json") == "posetrack18"


@needs_sample
def test_sample_posetrack17_and_18_give_the_same_structure():
    v18 = read_posetrack(SAMPLE / "annotations" / "val")
    v17 = read_posetrack(SAMPLE / "annotations_pt17" / "val")
    assert detect_format(SAMPLE / "annotations_pt17/val/003418_mpii_test.json") == "posetrack17"
    for a, b in zip(v18, v17, strict=True):
        assert_same_video(a, b, image_ids=False)
    assert all(f.image_id is None for v in v17 for f in v.frames)


@needs_sample
def test_sample_merged_file_splits_into_videos_by_folder():
    merged = read_posetrack(SAMPLE / "annotations" / "test_posetrack18_val.json")
    per_video = {v.name: v for v in read_posetrack(SAMPLE / "annotations" / "val")}
    assert sorted(v.name for v in merged) == NAMES
    for v in merged:
        assert_same_video(v, per_video[v.name])


@needs_sample
def test_sample_detections():
    path = SAMPLE / "annotations" / "test_posetrack18_human_detections.json"
    raw = json.loads(path.read_text())
    boxes = read_detections(path)
    assert sum(len(b) for b in boxes.values()) == sum(r["score"] >= 0.2 for r in raw) < len(raw)
    assert all(b.shape[1] == 5 and (b[:, 4] >= 0.2).all() for b in boxes.values())
    assert sum(len(b) for b in read_detections(path, min_score=0.0).values()) == 278
    frame = read_posetrack(SAMPLE / "annotations" / "val")[2].frames[0]
    np.testing.assert_allclose(boxes_for_frame(boxes, frame)[0, :4], raw[0]["bbox"])


# ------------------------------------------------------------------ writers, round trips


def make_video(name: str = "000007_synth", predictions: bool = False) -> VideoAnnotation:
    rng = np.random.default_rng(0)
    video = VideoAnnotation(name)
    for f in range(3):
        persons = []
        for t in range(2 if f != 1 else 0):
            kp = np.column_stack([rng.uniform(10, 500, (17, 2)), np.ones(17)])
            kp[3:5] = 0
            if predictions:
                kp[:, 2] = rng.random(17)
                kp[3:5] = 0
            persons.append(PersonAnnotation(
                kp, box=np.array([5.0, 6, 100, 200]), head_box=np.array([10, 20, 40.5, 61]),
                track_id=t, score=0.75 if predictions else None,
            ))  # fmt: skip
        regions = [np.array([[0, 0], [50, 0], [50, 40.5]])] if f == 0 else []
        video.frames.append(
            FrameAnnotation(
                f"images/val/{name}/{f:06d}.jpg", f, 7_000 + f, f != 1, persons, regions
            )
        )
    return video


def test_gt_writer_round_trip(tmp_path):
    video = make_video()
    path = write_posetrack18(video, tmp_path / "sub" / f"{video.name}.json")
    (back,) = read_posetrack18(path)
    assert_same_video(video, back)
    data = json.loads(path.read_text())
    assert data["categories"][0]["keypoints"][1] == "head_bottom"
    assert data["annotations"][0]["bbox_head"] == [10, 20, 30.5, 41]
    assert data["images"][1]["is_labeled"] is False and data["images"][0]["vid_id"] == "000007"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_prediction_writer_round_trip_and_fields(tmp_path):
    video = make_video(predictions=True)
    video.frames[0].persons[0].keypoints[7] = 0  # an absent joint
    video.frames[0].persons[1].track_id = None  # gets its index in the frame
    path = write_posetrack18_predictions(video, tmp_path / "p.json")
    (back,) = read_posetrack18(path, predictions=True)
    for fa, fb in zip(video.frames, back.frames, strict=True):
        for pa, pb in zip(fa.persons, fb.persons, strict=True):
            np.testing.assert_array_equal(pa.keypoints, pb.keypoints)
    data = json.loads(path.read_text())
    a = data["annotations"][0]
    assert len(a["scores"]) == 17 and a["keypoints"][3 * 7 : 3 * 8] == [0, 0, 0]
    assert a["keypoints"][2] == 1 and a["image_id"] == 7000 and a["track_id"] == 0
    assert data["annotations"][1]["track_id"] == 1
    assert {"id", "file_name", "frame_id", "vid_id", "is_labeled"} <= set(data["images"][0])


def test_writer_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "v.json"
    target.write_text("old")

    def broken_fsync(fd):  # the content is written, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(kpdiff.io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_posetrack18(make_video(), target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["v.json"]


def test_writer_rejects_bad_keypoints(tmp_path):
    video = make_video()
    video.frames[2].persons[1].keypoints = np.full((17, 3), np.nan)
    with pytest.raises(KpdiffInputError, match=r"video '000007_synth', frame 2 .*person 1"):
        write_posetrack18(video, tmp_path / "v.json")
    assert not (tmp_path / "v.json").exists()


def test_missing_scores_read_as_minus_9999(tmp_path):
    video = make_video(predictions=True)
    path = write_posetrack18_predictions(video, tmp_path / "p.json")
    data = json.loads(path.read_text())
    for a in data["annotations"]:
        a.pop("scores")
    path.write_text(json.dumps(data))
    kp = read_posetrack18(path, predictions=True)[0].frames[0].persons[0].keypoints
    assert (kp[5:, 2] == MISSING_SCORE).all() and (kp[3:5] == 0).all()
    points = [{"id": [0], "x": [3], "y": [4]}, {"id": [1], "x": [5], "y": [6], "score": [0.25]}]
    rect = {"annopoints": [{"point": points}]}
    pt17 = {"annolist": [{"image": [{"name": "a/000000.jpg"}], "annorect": [rect]}]}
    (tmp_path / "p17.json").write_text(json.dumps(pt17))
    kp = read_posetrack17(tmp_path / "p17.json", predictions=True)[0].frames[0].persons[0].keypoints
    assert kp[16].tolist() == [3, 4, MISSING_SCORE] and kp[14].tolist() == [5, 6, 0.25]


def test_posetrack21_layout(tmp_path):
    video = make_video("000001_bonn_train")
    path = write_posetrack18(video, tmp_path / "posetrack_data" / "val" / f"{video.name}.json")
    data = json.loads(path.read_text())
    for im in data["images"]:
        im["has_labeled_person"] = im["is_labeled"]
    for a in data["annotations"]:
        a["person_id"] = 1000 + a["track_id"]
    path.write_text(json.dumps(data))
    assert detect_format(path) == "posetrack21"
    for videos in (read_posetrack21(tmp_path), read_posetrack(tmp_path), read_posetrack21(path)):
        assert_same_video(videos[0], video)


# ------------------------------------------------------------------ malformed files


def write(tmp_path: Path, obj, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def pt18(**changes):
    image = {"id": 5, "file_name": "v/000000.jpg", "is_labeled": True}
    ann = {"image_id": 5, "track_id": 0, "keypoints": [1.0] * 51, "bbox_head": [0, 0, 9, 9]}
    image.update(changes.pop("image", {}))
    ann.update(changes.pop("ann", {}))
    return {"images": [image], "annotations": [ann], **changes}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ({"images": 3}, "top level: field 'images'"),
        (pt18(image={"id": "x"}), r"images\[0\]: field 'id': expected an integer"),
        (pt18(image={"file_name": None}), r"images\[0\] \(image id 5\): field 'file_name'"),
        (pt18(ann={"image_id": 6}), r"annotations\[0\] \(image id 6\): field 'image_id': no image"),
        (pt18(ann={"keypoints": [1.0] * 50}), r"field 'keypoints': expected 51 numbers, got 50"),
        (pt18(ann={"keypoints": [None] * 51}), "field 'keypoints': expected a list of numbers"),
        (pt18(ann={"keypoints": [float("nan")] * 51}), "not valid JSON"),  # NaN is not JSON
        (pt18(ann={"keypoints": [10**400] * 51}), "not valid JSON"),  # beyond 64 bits
        ({"images": [{"id": 1, "file_name": "a/0.jpg"}]}, "field 'annotations': expected a list"),
        (pt18(ann={"keypoints": [1.0, 1.0, -7.0] * 17}), "visibility .* is negative"),
        (pt18(ann={"bbox_head": [1, 2]}), "field 'bbox_head': expected 4 numbers"),
        (pt18(ann={"track_id": 1.5}), "field 'track_id': expected an integer"),
        (pt18(image={"ignore_regions_x": [[1, 2]], "ignore_regions_y": []}), "ignore_regions_x"),
        (pt18(image={"ignore_regions_x": [[1, 2]], "ignore_regions_y": [[1]]}),
         r"field 'ignore_regions_y\[0\]': expected 2 numbers"),
        (pt18(categories=[{"keypoints": ["nose", "left_eye"]}]), "do not fit schema 'posetrack'"),
    ],
)  # fmt: skip
def test_malformed_posetrack18(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(KpdiffInputError, match=message) as err:
        read_posetrack(path)
    assert str(path) in str(err.value)


def test_malformed_posetrack18_details(tmp_path):
    data = pt18()
    data["images"].append(dict(data["images"][0]))
    with pytest.raises(
        KpdiffInputError, match=r"images\[1\] \(image id 5\): field 'id': duplicate"
    ):
        read_posetrack(write(tmp_path, data))
    with pytest.raises(KpdiffInputError, match="field 'scores': expected 17 numbers"):
        read_posetrack18(write(tmp_path, pt18(ann={"scores": [0.5] * 3})), predictions=True)
    with pytest.raises(KpdiffInputError, match="not a PoseTrack file"):
        read_posetrack(write(tmp_path, {"foo": []}))
    with pytest.raises(KpdiffInputError, match="no such file or folder"):
        read_posetrack(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KpdiffInputError, match=r"no \.json files"):
        read_posetrack(empty)
    write(tmp_path / "empty", pt18(), "a.json")
    write(tmp_path / "empty", {"images": [{"id": 1, "file_name": "a/000000.jpg"}],
                               "annotations": []}, "b.json")  # fmt: skip
    (tmp_path / "empty" / "b.json").rename(tmp_path / "empty" / "c.json")
    data = pt18(image={"file_name": "x/000000.jpg"})
    data["images"].append({"id": 9, "file_name": "a/000000.jpg"})
    write(tmp_path / "empty", data, "d.json")  # a merged file holding a video named "a"
    with pytest.raises(KpdiffInputError, match="video 'a' already read from"):
        read_posetrack(tmp_path / "empty")


def pt17_point(**kw):
    return {"id": [0], "x": [1.0], "y": [2.0], **kw}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"annorect": []}, r"annolist\[0\]: field 'image'"),
        ({"image": [{"name": "v/1.jpg"}], "annorect": 5}, "field 'annorect': expected a list"),
        ({"image": [{"name": "v/1.jpg"}], "annorect": [{"x1": [1]}]},
         r"annolist\[0\], annorect\[0\]: field 'y1'"),
        ({"image": [{"name": "v/1.jpg"}],
          "annorect": [{"annopoints": [{"point": [pt17_point(), pt17_point()]}]}]},
         r"annorect\[0\], point 1: field 'id': joint id 0 appears twice"),
        ({"image": [{"name": "v/1.jpg"}],
          "annorect": [{"annopoints": [{"point": [pt17_point(x=["a"])]}]}]},
         r"point 0: field 'x': expected a finite number"),
        ({"image": [{"name": "v/1.jpg"}], "ignore_regions": [{"pts": []}]},
         r"field 'ignore_regions\[0\]'"),
        ({"image": [{"name": "v/1.jpg"}],  # found by the fuzz suite: a joint at (1, 2), v = -1
          "annorect": [{"annopoints": [{"point": [pt17_point(is_visible=-1)]}]}]},
         r"point 0: field 'is_visible': expected a flag >= 0, got -1"),
        ({"image": [{"name": "v/1.jpg"}], "is_labeled": [-2], "annorect": []},
         r"field 'is_labeled': expected a flag >= 0"),
    ],
)  # fmt: skip
def test_malformed_posetrack17(tmp_path, entry, message):
    path = write(tmp_path, {"annolist": [entry]})
    with pytest.raises(KpdiffInputError, match=message) as err:
        read_posetrack17(path)
    assert str(path) in str(err.value)
    with pytest.raises(KpdiffInputError, match="expected an object with an 'annolist' list"):
        read_posetrack17(write(tmp_path, {"annolist": 1}))


# ------------------------------------------------------------------ detections


def test_detections_dcpose_and_coco(tmp_path):
    dc = [
        {"image_name": "images/val/v1/000003.jpg", "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_name": "images/val/v1/000003.jpg", "bbox": [5, 6, 7, 8], "score": 0.1},
        {"image_name": "/data/images/val/v1/000004.jpg", "bbox": [0, 0, 1, 1], "score": 0.2},
    ]  # fmt: skip
    boxes = read_detections(write(tmp_path, dc))
    assert set(boxes) == {"v1/000003.jpg", "v1/000004.jpg"}
    assert boxes["v1/000003.jpg"].tolist() == [[1, 2, 3, 4, 0.9]]  # 0.1 < 0.2 dropped, 0.2 kept
    frame = FrameAnnotation("images/val/v1/000004.jpg", 4)
    assert boxes_for_frame(boxes, frame).shape == (1, 5)
    assert boxes_for_frame(boxes, FrameAnnotation("v2/000000.jpg", 0)).shape == (0, 5)
    assert image_key("C:\\PT\\images\\v1\\000003.jpg") == "v1/000003.jpg"
    coco = [
        {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5, "category_id": 1},
        {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5, "category_id": 2},
        {"image_id": 8, "bbox": [1, 2, 3, 4], "score": 0.3},
    ]
    boxes = read_detections(write(tmp_path, coco), min_score=0.4)
    assert list(boxes) == [7] and len(boxes[7]) == 1
    assert boxes_for_frame(boxes, FrameAnnotation("x/000000.jpg", 0, image_id=7)).shape == (1, 5)
    assert len(read_detections(write(tmp_path, coco), category_id=None)[7]) == 2


@pytest.mark.parametrize(
    "records, message",
    [
        ({"a": 1}, "expected a JSON list of detection records"),
        ([{"image_id": 1, "score": 0.5}], "record 0: field 'bbox' is missing"),
        ([{"image_id": 1, "bbox": [1, 2, 3], "score": 0.5}], r"record 0 \(image 1\): field 'bbox'"),
        ([{"image_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5}], "w, h >= 0"),
        ([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": "high"}], "field 'score'"),
        ([{"image_id": "1", "bbox": [1, 2, 3, 4], "score": 0.5}], "field 'image_id'"),
        ([{"image_name": "a/b.jpg", "bbox": [1, 2, 3, 4], "score": 0.5},
          {"image_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}], "record 1: field 'image_name'"),
    ],
)  # fmt: skip
def test_malformed_detections(tmp_path, records, message):
    path = write(tmp_path, records)
    with pytest.raises(KpdiffInputError, match=message) as err:
        read_detections(path)
    assert str(path) in str(err.value)


def test_a_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "gt.json"
    os.mkfifo(fifo)
    with pytest.raises(KpdiffInputError, match="not a regular file"):
        read_posetrack(fifo)


def test_listing_order_is_poseval_order_and_sorted_is_by_name(tmp_path):
    for name in ("b", "a", "c"):
        data = pt18(image={"file_name": f"{name}/000000.jpg"})
        write(tmp_path, data, f"{name}.json")
    import glob

    listed = [os.path.basename(f)[:-5] for f in glob.glob(str(tmp_path / "*.json"))]
    assert [v.name for v in read_posetrack(tmp_path, order="listing")] == listed
    assert [v.name for v in read_posetrack(tmp_path)] == ["a", "b", "c"]
