"""``PosePipeline``: the poses of the whole video in one dataset, whatever the source (folder,
array, generator), lazily over a long stream, with a detector or given boxes, tracked, plotted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kpdiff.data.clips import ClipConfig, TopDownClipDataset
from kpdiff.data.detections import read_detections
from kpdiff.data.records import PersonPose, batch_poses
from kpdiff.data.structures import FrameAnnotation, VideoAnnotation
from kpdiff.data.synthetic import SyntheticConfig, build_synthetic_dataset
from kpdiff.detection import PersonDetector
from kpdiff.diffpose import DiffPose
from kpdiff.engine.predict import VideoPredictor
from kpdiff.errors import KpdiffInputError
from kpdiff.pipeline import FramePoses, PosePipeline
from kpdiff.tracking import IoUTracker

SETTINGS = {"num_samples": 2, "steps": 1, "batch_size": 4, "seed": 3}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pipeline-model")
    DiffPose.from_preset("diffpose-tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic validation video (folder of frames) and its fake detector's boxes."""
    root = tmp_path_factory.mktemp("pipeline-data") / "synthetic"
    build_synthetic_dataset(
        root, SyntheticConfig(num_videos=1, frames_per_video=7, seed=5), splits=("val",)
    )
    (folder,) = sorted((root / "images" / "val").iterdir())
    return folder, root / "detections" / "val_boxes.json"


@pytest.fixture(scope="module")
def pipe(model_dir: Path) -> PosePipeline:
    torch.set_num_threads(1)
    return PosePipeline.from_pretrained(model_dir, detector=None, **SETTINGS)


def boxes_by_index(folder: Path, box_file: Path) -> dict[int, np.ndarray]:
    found = read_detections(box_file, min_score=-np.inf)
    frames = sorted(folder.glob("*.jpg"))
    return {i: found[f"{folder.name}/{f.name}"] for i, f in enumerate(frames)}


def as_rows(frames: list[FramePoses]) -> list[tuple[int, int, np.ndarray]]:
    return [(f.index, p.track_id, np.column_stack([p.keypoints, p.scores, p.spread]))
            for f in frames for p in f.persons]  # fmt: skip


def whole_video(model: DiffPose, folder: Path, box_file: Path) -> list[PersonPose]:
    """The poses the plain way: every clip of the video in a dataset, batches in order."""
    frames = sorted(folder.glob("*.jpg"))
    video = VideoAnnotation(folder.name, [
        FrameAnnotation(image_path=str(p), frame_index=i, image_id=i) for i, p in enumerate(frames)
    ])  # fmt: skip
    config = ClipConfig(delta=model.config.delta, input_size=tuple(model.config.input_size))
    dataset = TopDownClipDataset.from_videos(
        [video], "/", detections=box_file, key_frames="all", config=config
    )
    generator = torch.Generator().manual_seed(SETTINGS["seed"])
    rows = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=SETTINGS["batch_size"]):
            result = model.predict(
                batch["clip"], num_samples=SETTINGS["num_samples"], steps=SETTINGS["steps"],
                generator=generator,
            )  # fmt: skip
            rows += batch_poses(batch, result)
    tracker, tracked = IoUTracker(), []
    for i in range(len(frames)):
        here = [r for r in rows if r.frame_index == i]
        boxes = np.array([r.box for r in here]).reshape(-1, 4)
        ids = tracker.update(boxes, np.array([r.box_score for r in here]))
        tracked += [dataclasses.replace(r, track_id=int(t)) for r, t in zip(here, ids, strict=True)]
    return tracked


def test_same_poses_as_the_whole_video_in_one_dataset(pipe, model_dir, video):
    folder, box_file = video
    reference = whole_video(DiffPose.from_pretrained(model_dir), folder, box_file)
    frames = pipe(folder, box_file)
    assert [f.index for f in frames] == list(range(len(sorted(folder.glob("*.jpg")))))
    got = as_rows(frames)
    assert len(got) == len(reference) > 0
    for (index, track, values), want in zip(got, reference, strict=True):
        assert index == want.frame_index and track == want.track_id
        expected = np.column_stack([want.keypoints, want.scores, want.spread])
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9)
    # VideoPredictor (kpdiff predict) is this pipeline over the whole video
    whole = VideoPredictor(DiffPose.from_pretrained(model_dir), **SETTINGS)(folder, box_file)
    assert [(p.frame_index, p.track_id) for p in whole.persons] == [(i, t) for i, t, _ in got]
    assert [p.video for p in whole.persons] == [folder.name] * len(got)
    first = frames[0]
    assert first.image.shape == cv2.imread(str(sorted(folder.glob("*.jpg"))[0])).shape
    person = first.persons[0]
    assert person.keypoints.shape == (17, 2) and person.scores.shape == (17,)
    assert person.box.shape == (4,) and 0 <= person.box_score <= 1
    assert first.keypoints().shape == (len(first.persons), 17, 3)


def test_arrays_and_generators_give_the_folder_s_poses(pipe, video):
    folder, box_file = video
    images = [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))]
    boxes = boxes_by_index(folder, box_file)
    want = as_rows(pipe(folder, box_file))
    for source in (np.stack(images), iter(images), sorted(folder.glob("*.jpg"))):
        got = as_rows(pipe(source, boxes))
        assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in want]
        for (_, _, a), (_, _, b) in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_long_stream_is_read_lazily(pipe, video):
    """Poses of the first frames come out long before the stream ends, and the pipeline holds
    a bounded number of frames (δ behind, one batch ahead) whatever the stream's length."""
    folder, _ = video
    image = cv2.imread(str(sorted(folder.glob("*.jpg"))[0]))
    read = []

    def frames():
        for i in range(10_000):
            read.append(i)
            yield image

    boxes = {i: np.array([[30.0, 20, 50, 90, 0.9]]) for i in range(10_000)}
    stream = pipe.stream(frames(), boxes)
    for n, frame in enumerate(stream):
        assert frame.index == n and len(frame.persons) == 1
        # one clip per frame: frame n waits for frame n + δ and for its batch of 4 clips
        assert len(read) <= n + 1 + 1 + SETTINGS["batch_size"]
        if n == 11:
            break
    assert len(read) < 20
    ids = {frame.persons[0].track_id for frame in pipe.stream(iter([image] * 6), boxes)}
    assert ids == {0}  # the same box on every frame: one track


class TwoPeople(torch.nn.Module):
    """A stand-in detector: two people standing still (torchvision's output format)."""

    def forward(self, images):
        return [
            {"boxes": torch.tensor([[10.0, 20, 60, 120], [80, 30, 140, 150]]),
             "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.6, 0.9])}
            for _ in images
        ]  # fmt: skip


def test_the_detector_finds_the_boxes_and_people_keep_their_ids(model_dir):
    detector = PersonDetector(model=TwoPeople(), min_score=0.5, batch_size=3)
    pipe = PosePipeline.from_pretrained(model_dir, detector=detector, **SETTINGS)
    frames = pipe(np.full((5, 160, 200, 3), 90, np.uint8))
    assert [len(f.persons) for f in frames] == [2] * 5
    for f in frames:  # highest score first, xywh, the same track per person
        assert [p.track_id for p in f.persons] == [0, 1]
        np.testing.assert_allclose(f.persons[0].box, [80, 30, 60, 120])
        assert f.persons[0].box_score == pytest.approx(0.9)
    one = pipe(np.full((160, 200, 3), 90, np.uint8))  # a single image is a one-frame video
    assert len(one) == 1 and len(one[0].persons) == 2


def test_plot_draws_the_skeletons(pipe, video):
    folder, box_file = video
    frame = pipe(folder, box_file)[0]
    drawn = frame.plot()
    assert drawn.shape == frame.image.shape and drawn is not frame.image
    changed = np.abs(drawn.astype(int) - frame.image).sum(axis=2) > 0
    # the drawing lies where the joints are: every changed pixel is near a drawn joint
    kp = frame.keypoints()
    ys, xs = np.nonzero(changed)
    assert len(xs) > 20
    joints = kp[kp[..., 2] >= 0.2][:, :2] if (kp[..., 2] >= 0.2).any() else kp.reshape(-1, 3)[:, :2]
    x0, y0 = joints.min(0) - 40
    x1, y1 = joints.max(0) + 40
    assert ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).mean() > 0.99


def test_bad_sources_and_boxes_are_one_line_errors(pipe, video, tmp_path):
    folder, _ = video
    image = np.zeros((64, 48, 3), np.uint8)
    cases = [
        ((np.zeros((2, 64, 48, 3), np.float32), {}), "source: expected a BGR uint8"),
        ((np.zeros((64, 48), np.uint8), {}), "source: expected a BGR uint8"),
        (([image, "nope"], {}), r"nope"),
        (([image, np.zeros((4, 4), np.uint8)], {}), r"source\[1\]: expected"),
        ((42, {}), "source: expected a video file"),
        ((iter([]), {}), "source: video has no frames"),
        ((tmp_path, {}), "holds no .jpg"),
        ((tmp_path / "missing.jpg", {}), "does not exist"),
        ((folder, tmp_path / "none.json"), "boxes: .*none.json does not exist"),
        (([image], {0: np.ones((2, 4))}), r"boxes\[0\]: expected finite \[N, 5\]"),
        (([image], {0: [[1, 2, 3, np.nan, 1]]}), r"boxes\[0\]: expected finite"),
        (([image], {"0": np.ones((1, 5))}), "boxes: expected frame indices"),
        (([image], [1, 2]), "boxes: expected a mapping"),
        (([image], None), "no detector"),
    ]
    for (source, boxes), message in cases:
        with pytest.raises(KpdiffInputError, match=message) as err:
            list(pipe.stream(source, boxes))
        assert "\n" not in str(err.value)
    other = tmp_path / "other.json"
    other.write_text('[{"image_name": "elsewhere/000000.jpg", "bbox": [1, 2, 30, 40], '
                     '"score": 0.9}]')  # fmt: skip
    with pytest.raises(KpdiffInputError, match="none of its boxes names a frame"):
        pipe(folder, other)
    with pytest.raises(KpdiffInputError, match="batch_size"):
        PosePipeline(pipe.model, batch_size=0)
