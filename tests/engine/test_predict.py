"""``VideoPredictor`` on a synthetic clip folder and on a real PoseTrack video (folder and mp4):
persons with keypoints and spread, PoseTrack18 and COCO files, GIF and MP4 overlays."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kpdiff.data.detections import read_detections
from kpdiff.data.posetrack import read_posetrack
from kpdiff.diffpose import DiffPose
from kpdiff.engine.predict import VideoPredictor, list_frames, render_video, save_prediction_json
from kpdiff.errors import KpdiffInputError

SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample",
    )
)
REAL_VIDEO = SAMPLE / "videos" / "000001_mpiinew_test"
needs_sample = pytest.mark.skipif(not REAL_VIDEO.is_dir(), reason="no PoseTrack18 sample here")


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    model = DiffPose.from_pretrained(tiny_model_dir)
    return VideoPredictor(model, num_samples=2, steps=1, batch_size=8)


@pytest.fixture(scope="module")
def synthetic(tiny_data, predictor):
    folder = tiny_data / "images" / "val" / "020000_synthetic"
    boxes = tiny_data / "detections" / "val_boxes.json"
    return folder, boxes, predictor(folder, boxes)


def test_predicts_every_box_of_every_frame(synthetic):
    folder, boxes, result = synthetic
    frames = sorted(folder.glob("*.jpg"))
    assert result.name == "020000_synthetic" and result.frames == frames
    detections = read_detections(boxes)
    expected = sum(len(detections.get(f"{folder.name}/{f.name}", [])) for f in frames)
    assert expected > 0 and len(result.persons) == expected
    for p in result.persons:
        assert 0 <= p.frame_index < len(frames) and p.video == result.name
        kp, spread = p.triplets(), p.spread
        assert kp.shape == (17, 3) and spread.shape == (17,)
        assert np.isfinite(kp).all() and (spread >= 0).all()
        assert (kp[:, 2] >= 0).all() and (kp[:, 2] <= 1).all()
        x, y, bw, bh = p.box
        # keypoints land in the (enlarged) crop around the box, in image pixels
        assert (kp[:, 0] > x - bw).all() and (kp[:, 0] < x + 2 * bw).all()
        assert (kp[:, 1] > y - bh).all() and (kp[:, 1] < y + 2 * bh).all()


def test_posetrack18_file_reads_back(synthetic, tmp_path):
    _, _, result = synthetic
    path = result.write_posetrack18(tmp_path / "pred.json")
    (video,) = read_posetrack(path, predictions=True)
    assert len(video.frames) == len(result.frames)
    assert [f.frame_index for f in video.frames] == list(range(len(result.frames)))
    got = [p.keypoints for f in video.frames for p in f.persons]
    want = [p.triplets() for p in sorted(result.persons, key=lambda p: p.frame_index)]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-9)


def test_coco_and_raw_files(synthetic, tmp_path):
    _, _, result = synthetic
    records = json.loads(result.write_coco(tmp_path / "coco.json").read_text())
    assert len(records) == len(result.persons)
    for rec in records:
        assert set(rec) == {"image_id", "file_name", "category_id", "bbox", "keypoints", "score",
                            "keypoint_spread", "track_id"}  # fmt: skip
        assert rec["category_id"] == 1 and len(rec["bbox"]) == 4
        assert len(rec["keypoints"]) == 51 and len(rec["keypoint_spread"]) == 17
        assert result.frames[rec["image_id"]].name == rec["file_name"]
    raw = json.loads(save_prediction_json(result, tmp_path / "raw.json").read_text())
    assert raw["video"] == result.name and len(raw["persons"]) == len(result.persons)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json", "raw.json"]


@pytest.mark.parametrize("suffix", ["gif", "mp4"])
def test_render_writes_a_gif_and_an_mp4(synthetic, tmp_path, suffix):
    _, _, result = synthetic
    path = render_video(result, tmp_path / "out" / f"overlay.{suffix}", fps=5)
    assert path.is_file() and path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    if suffix == "gif":
        with Image.open(path) as im:
            assert im.n_frames == len(result.frames)
    else:
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(result.frames)
        cap.release()


def test_same_seed_same_poses(predictor, synthetic):
    folder, boxes, result = synthetic
    again = predictor(folder, boxes)
    assert again.persons == result.persons  # every field of every record


def test_a_folder_name_with_a_dot_is_the_video_name(predictor, synthetic, tmp_path):
    folder, boxes, _ = synthetic
    (tmp_path / "clip.v2").symlink_to(folder, target_is_directory=True)
    assert predictor(tmp_path / "clip.v2", boxes).name == "clip.v2"


def test_bad_inputs_are_clear_errors(predictor, synthetic, tmp_path, tiny_model_dir):
    folder, boxes, _ = synthetic
    with pytest.raises(KpdiffInputError, match="does not exist"):
        predictor(tmp_path / "nope", boxes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KpdiffInputError, match="holds no"):
        predictor(tmp_path / "empty", boxes)
    (tmp_path / "not_a_video.mp4").write_text("hello")
    with pytest.raises(KpdiffInputError, match="cannot be decoded"):
        predictor(tmp_path / "not_a_video.mp4", boxes)
    with pytest.raises(KpdiffInputError, match="does not exist"):
        predictor(folder, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('[{"image_name": "a/b.jpg", "bbox": [1, 2], "score": 1}]')
    with pytest.raises(KpdiffInputError, match="bbox"):
        predictor(folder, tmp_path / "bad.json")
    other = [{"image_name": "elsewhere/000000.jpg", "bbox": [1, 2, 30, 40], "score": 0.9}]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(KpdiffInputError, match="none of its boxes") as err:
        predictor(folder, tmp_path / "other.json")
    assert "020000_synthetic/000000.jpg" in str(err.value)
    with pytest.raises(KpdiffInputError, match="joints"):
        VideoPredictor(DiffPose.from_pretrained(tiny_model_dir), schema="quadruped")


def test_a_text_file_is_not_a_video(predictor, synthetic, tmp_path):
    _, boxes, _ = synthetic
    (tmp_path / "notes.txt").write_text("FFmpeg would read this as ANSI art\n" * 50)
    with pytest.raises(KpdiffInputError, match="neither a folder") as err:
        predictor(tmp_path / "notes.txt", boxes)
    assert "notes.txt" in str(err.value) and ".mp4" in str(err.value)


def test_a_truncated_jpeg_is_named(predictor, synthetic, tmp_path):
    folder, boxes, _ = synthetic
    copy = tmp_path / folder.name
    copy.mkdir()
    for f in sorted(folder.glob("*.jpg")):
        (copy / f.name).write_bytes(f.read_bytes())
    cut = sorted(copy.glob("*.jpg"))[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    assert cv2.imread(str(cut)) is not None  # OpenCV would decode it half grey
    with pytest.raises(KpdiffInputError, match="truncated JPEG") as err:
        predictor(copy, boxes)
    assert str(cut) in str(err.value)


def dcpose_boxes(folder: Path, scores, size=(30.0, 40.0), extra: int = 0) -> list[dict]:
    frames = sorted(folder.glob("*.jpg"))
    out = [
        {"image_name": f"{folder.name}/{f.name}", "bbox": [10.0, 10.0, *size], "score": s}
        for f, s in zip(frames, scores, strict=False)
    ]
    out += [
        {"image_name": f"{folder.name}/{i:06d}.jpg", "bbox": [1, 2, 30, 40], "score": 0.9}
        for i in range(100, 100 + extra)
    ]
    out.append({"image_name": "other_video/000000.jpg", "bbox": [1, 2, 30, 40], "score": 0.9})
    return out


def test_boxes_below_the_threshold_give_the_reason(predictor, synthetic, tmp_path):
    folder, _, _ = synthetic
    path = tmp_path / "low.json"
    path.write_text(json.dumps(dcpose_boxes(folder, [0.1, 0.15])))
    with pytest.raises(KpdiffInputError, match=r"below min_box_score 0\.2") as err:
        predictor(folder, path)
    assert "0.15" in str(err.value) and "--min-box-score" in str(err.value)
    model = predictor.model
    lenient = VideoPredictor(model, num_samples=1, steps=1, min_box_score=0.05)
    assert len(lenient(folder, path).persons) == 2
    with pytest.raises(KpdiffInputError, match="min_box_score"):
        VideoPredictor(model, min_box_score=float("nan"))


def test_zero_size_boxes_are_named_as_such(predictor, synthetic, tmp_path):
    folder, _, _ = synthetic
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(dcpose_boxes(folder, [0.9, 0.9], size=(0.0, 40.0))))
    with pytest.raises(KpdiffInputError, match="1 pixel wide"):
        predictor(folder, path)


def test_boxes_of_missing_frames_are_a_warning(predictor, synthetic, tmp_path):
    folder, _, _ = synthetic
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(dcpose_boxes(folder, [0.9], extra=3)))
    with pytest.warns(UserWarning, match="boxes of 3 images name no frame"):
        result = predictor(folder, path)
    assert len(result.persons) == 1
    coco = [{"image_id": i, "bbox": [10, 10, 30, 40], "score": 0.9} for i in (0, 99)]
    path.write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match="boxes of 1 images"):
        assert len(predictor(folder, path).persons) == 1


def test_a_schema_that_would_relabel_the_joints_is_refused(tiny_model_dir, tmp_path):
    model = DiffPose.from_pretrained(tiny_model_dir)
    recorded = DiffPose(model.config.replace(schema="posetrack"))
    with pytest.raises(KpdiffInputError, match="relabel"):
        VideoPredictor(recorded, schema="coco")
    assert VideoPredictor(recorded).schema.name.lower() == "posetrack"
    assert VideoPredictor(model, schema="coco").schema.name.lower() == "coco"  # not recorded


# ------------------------------------------------------------------------- the real sample


def centre_boxes(layout: str, frames: int, video: str) -> list[dict]:
    """Two plausible person boxes near the centre of a 1280x720 frame, on every frame."""
    boxes = [[560.0, 250.0, 90.0, 220.0], [700.0, 260.0, 80.0, 200.0]]
    out = []
    for i in range(frames):
        for box in boxes:
            key = {"image_name": f"{video}/{i:06d}.jpg"} if layout == "dcpose" else {"image_id": i}
            out.append({**key, "bbox": box, "score": 0.9, "category_id": 1})
    return out


@needs_sample
@pytest.mark.parametrize(
    ("source", "layout"), [("folder", "dcpose"), ("mp4", "dcpose"), ("mp4", "coco")]
)
def test_real_posetrack_video(predictor, tmp_path, source, layout):
    video = REAL_VIDEO if source == "folder" else REAL_VIDEO / f"{REAL_VIDEO.name}.mp4"
    frames = list_frames(video)
    assert len(frames) == (10 if source == "folder" else 5)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(centre_boxes(layout, len(frames), REAL_VIDEO.name)))
    result = predictor(video, boxes)
    assert result.name == REAL_VIDEO.name and len(result.frames) == len(frames)
    assert len(result.persons) == 2 * len(frames)
    for p in result.persons:
        kp = p.triplets()
        assert kp.shape == (17, 3) and p.spread.shape == (17,)
        assert (kp[:, 0] > 400).all() and (kp[:, 0] < 900).all()  # around the boxes
        assert (kp[:, 1] > 150).all() and (kp[:, 1] < 560).all()
    (back,) = read_posetrack(result.write_posetrack18(tmp_path / "pred.json"), predictions=True)
    assert sum(len(f.persons) for f in back.frames) == 2 * len(frames)
    assert len(json.loads(result.write_coco(tmp_path / "coco.json").read_text())) == 2 * len(frames)
    if source == "mp4":
        out = render_video(result, tmp_path / "overlay.mp4")
        import av

        with av.open(str(out)) as container:  # H.264, which browsers play
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.width == 640
            assert sum(1 for _ in container.decode(stream)) == len(frames)
        assert result.video_file == video and not (tmp_path / "frames").exists()
    # nothing was written next to the sample
    assert sorted(p.name for p in REAL_VIDEO.iterdir()) == sorted(
        [f"{i:06d}.jpg" for i in range(10)] + [f"{REAL_VIDEO.name}.mp4"]
    )


def test_people_are_tracked_across_frames(synthetic, tmp_path):
    _, _, result = synthetic
    by_frame: dict[int, list[int]] = {}
    for p in result.persons:
        by_frame.setdefault(p.frame_index, []).append(p.track_id)
    assert all(len(set(ids)) == len(ids) for ids in by_frame.values())
    # the two synthetic people (the fake detector's confident boxes) stay in view and move a
    # little: each keeps its id on every frame; its false positives come and go with new ids
    people = [p for p in result.persons if p.box_score > 0.7]
    assert {p.frame_index for p in people} == set(range(len(result.frames)))
    assert {p.track_id for p in people} == {0, 1}
    (back,) = read_posetrack(result.write_posetrack18(tmp_path / "pred.json"), predictions=True)
    written = sorted(p.track_id for f in back.frames for p in f.persons)
    assert written == sorted(p.track_id for p in result.persons)


def test_progress_bar_counts_frames(predictor, synthetic, capsys):
    folder, boxes, result = synthetic
    predictor(folder, boxes, progress=True)
    err = capsys.readouterr().err
    assert f"{len(result.frames)}/{len(result.frames)}" in err and "frame/s" in err
    predictor(folder, boxes)  # default: no bar
    assert capsys.readouterr().err == ""


def test_video_predictor_uses_the_detector_when_no_boxes(tiny_data, tiny_model_dir):
    import torch

    from kpdiff.detection import PersonDetector

    class Stub(torch.nn.Module):  # two people standing still, as a detector would see them
        def forward(self, images):
            return [
                {"boxes": torch.tensor([[10.0, 20, 60, 120], [80, 30, 140, 150]]),
                 "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.6, 0.9])}
                for _ in images
            ]  # fmt: skip

    folder = tiny_data / "images" / "val" / "020000_synthetic"
    model = DiffPose.from_pretrained(tiny_model_dir)
    predictor = VideoPredictor(
        model, num_samples=1, steps=1, detector=PersonDetector(model=Stub(), min_score=0.5)
    )
    result = predictor(folder)
    n = len(result.frames)
    assert len(result.persons) == 2 * n  # both persons on every frame
    assert sorted({p.track_id for p in result.persons}) == [0, 1]  # still, so tracked
    with pytest.raises(KpdiffInputError, match="no detector"):
        VideoPredictor(model)(folder)
    nobody = VideoPredictor(model, detector=PersonDetector(model=Stub(), min_score=0.95))
    with pytest.warns(UserWarning, match="found no person on the .* the prediction is empty"):
        empty = nobody(folder)
    assert empty.persons == [] and len(empty.frames) == n  # empty and valid: files are written
    (back,) = read_posetrack(empty.write_posetrack18(tiny_data / "empty.json"), predictions=True)
    assert len(back.frames) == n and not any(f.persons for f in back.frames)
