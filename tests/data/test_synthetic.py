"""The synthetic PoseTrack18-layout dataset: determinism, contents, builds, other schemas."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from kpdiff.data import synthetic
from kpdiff.data.detections import read_detections
from kpdiff.data.posetrack import read_posetrack, read_posetrack18, write_posetrack18
from kpdiff.data.schemas import KeypointSchema
from kpdiff.data.synthetic import (
    QUADRUPED,
    FigureRig,
    SyntheticConfig,
    build_synthetic_dataset,
)
from kpdiff.errors import KpdiffInputError
from kpdiff.metrics import posetrack_ap

# A user's body without a head: a 5-point finger chain, about 1 long.
FINGER = KeypointSchema(
    "finger",
    ("base", "k1", "k2", "k3", "tip"),
    (),
    ((0, 1), (1, 2), (2, 3), (3, 4)),
    eval_groups={"All": (0, 1, 2, 3, 4)},
)
FINGER_REST = {n: (0.0, 0.25 * i, 0.0) for i, n in enumerate(FINGER.keypoints)}

# Busy scenes so that every feature shows up in a few short videos.
BUSY = SyntheticConfig(
    num_videos=4,
    frames_per_video=12,
    persons_per_video=(2, 3),
    occluder_prob=1.0,
    translucent_prob=0.0,
    blur_prob=0.3,
    ignore_region_prob=0.5,
    seed=3,
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_dataset(tmp_path_factory.mktemp("busy") / "ds", BUSY, splits=("val",))


@pytest.fixture(scope="module")
def busy_occluded_labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = replace(BUSY, label_occluded=True)
    return build_synthetic_dataset(tmp_path_factory.mktemp("busy_lo") / "ds", cfg, splits=("val",))


def test_layout_and_reader_round_trip(busy: Path) -> None:
    manifest = json.loads((busy / "synthetic.json").read_text())
    names = manifest["videos"]["val"]
    assert len(names) == 4 and manifest["hash"] == BUSY.fingerprint(("val",))
    videos = read_posetrack(busy / "annotations" / "val")
    assert sorted(v.name for v in videos) == sorted(names)
    for video in videos:
        assert [f.frame_index for f in video.frames] == list(range(12))
        for frame in video.frames:
            assert (busy / frame.image_path).is_file()
            assert frame.image_path.startswith(f"images/val/{video.name}/")
            for person in frame.persons:
                assert person.keypoints.shape == (17, 3)
                assert person.box is not None and person.head_box is not None
    image = cv2.imread(str(busy / videos[0].frames[0].image_path))
    assert image.shape == (240, 320, 3)


def test_reader_writer_round_trip_is_byte_exact(busy: Path, tmp_path: Path) -> None:
    for path in sorted((busy / "annotations" / "val").glob("*.json")):
        write_posetrack18(read_posetrack18(path)[0], tmp_path / path.name)
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_deterministic_from_seed(busy: Path, tmp_path: Path) -> None:
    again = build_synthetic_dataset(tmp_path / "again", BUSY, splits=("val",))
    assert _files(again) == _files(busy)
    other = replace(BUSY, seed=4, num_videos=1)
    first = build_synthetic_dataset(tmp_path / "other", other, splits=("val",))
    name = "images/val/020000_synthetic/000000.jpg"
    assert (first / name).read_bytes() != (busy / name).read_bytes()


def test_contents(busy: Path, busy_occluded_labelled: Path) -> None:
    videos = read_posetrack(busy / "annotations" / "val")
    frames = [f for v in videos for f in v.frames]
    assert max(len(f.persons) for f in frames) >= 2
    assert any(f.ignore_regions for f in frames)
    for f in frames:
        regions = [Polygon(r) for r in f.ignore_regions]
        for p in f.persons:
            x, y, w, h = p.box
            assert not any(r.contains(Point(x + w / 2, y + h / 2)) for r in regions)
            vis = p.keypoints[:, 2] > 0
            assert np.all(p.keypoints[~vis] == 0)  # absent joints are (0, 0, 0)
            assert np.all((p.keypoints[vis, :2] >= 0) & (p.keypoints[vis, :2] <= (319, 239)))
            x1, y1, x2, y2 = p.head_box
            for j in (1, 2):  # head_bottom, head_top lie on the head box's axis
                if vis[j]:
                    assert x1 - 1 <= p.keypoints[j, 0] <= x2 + 1
                    assert y1 - 1 <= p.keypoints[j, 1] <= y2 + 1
    # Occluded joints: labelled when label_occluded=True, absent (v = 0) otherwise; same images.
    lab = {v.name: v for v in read_posetrack(busy_occluded_labelled / "annotations" / "val")}
    occluded = 0
    for v in videos:
        for f, g in zip(v.frames, lab[v.name].frames, strict=True):
            tracks = {p.track_id: p for p in g.persons}
            for p in f.persons:
                occluded += int(
                    ((p.keypoints[:, 2] == 0) & (tracks[p.track_id].keypoints[:, 2] > 0)).sum()
                )
    assert occluded > 10
    frame0 = "images/val/020000_synthetic/000005.jpg"
    assert (busy / frame0).read_bytes() == (busy_occluded_labelled / frame0).read_bytes()


def test_temporal_context_matters(busy: Path) -> None:
    """Some frames are blurred or occluded where both neighbours are not."""
    videos = read_posetrack(busy / "annotations" / "val")
    isolated_blur = transient_occlusion = 0
    for v in videos:
        sharp = [
            cv2.Laplacian(
                cv2.imread(str(busy / f.image_path), cv2.IMREAD_GRAYSCALE), cv2.CV_64F
            ).var()
            for f in v.frames
        ]
        isolated_blur += sum(sharp[t] < 0.6 * min(sharp[t - 1], sharp[t + 1]) for t in range(1, 11))
        vis = {}
        for f in v.frames:
            for p in f.persons:
                vis[p.track_id, f.frame_index] = p.keypoints[:, 2] > 0
        for (track, t), now in vis.items():
            before, after = vis.get((track, t - 1)), vis.get((track, t + 1))
            if before is not None and after is not None:
                transient_occlusion += int((before & after & ~now).sum())
    assert isolated_blur >= 2
    assert transient_occlusion >= 2


def test_detections_file(busy: Path) -> None:
    raw = json.loads((busy / "detections" / "val_boxes.json").read_text())
    assert raw and set(raw[0]) >= {"image_name", "bbox", "score"}
    boxes = read_detections(busy / "detections" / "val_boxes.json", min_score=0.0)
    assert len(boxes) >= 40  # most of the 48 frames have boxes
    scores = np.concatenate([b[:, 4] for b in boxes.values()])
    assert scores.min() < 0.2 < 0.9 < scores.max() <= 1  # false positives and good boxes
    for key, b in boxes.items():
        assert (busy / "images" / "val" / key).is_file()
        assert np.all(b[:, :2] >= 0) and np.all(b[:, 0] + b[:, 2] <= 320)


def test_labelled_every_and_skip_and_replace(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_videos=1, frames_per_video=7, labelled_every=3, seed=1)
    root = build_synthetic_dataset(tmp_path / "ds", cfg, splits=("train",))
    video = read_posetrack(root / "annotations" / "train")[0]
    assert [f.is_labeled for f in video.frames] == [t % 3 == 0 for t in range(7)]
    assert all(not f.persons for f in video.frames if not f.is_labeled)
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert build_synthetic_dataset(root, cfg, splits=("train",)) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp  # identical build: skipped
    cfg2 = SyntheticConfig(num_videos=2, frames_per_video=3, seed=1)
    build_synthetic_dataset(root, cfg2, splits=("train",))  # another config: replaced
    assert len(list((root / "images" / "train").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(KpdiffInputError, match="mine"):
        build_synthetic_dataset(tmp_path / "mine", cfg)


def test_quadruped_and_user_schema(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_videos=1, frames_per_video=4, schema=QUADRUPED, seed=2)
    root = build_synthetic_dataset(tmp_path / "dogs", cfg, splits=("val",))
    video = read_posetrack(root / "annotations" / "val", schema=QUADRUPED)[0]
    assert any(p.keypoints.shape == (13, 3) for f in video.frames for p in f.persons)

    # A user's 5-point "finger" chain: a rest pose and the two joints of the reference size
    # (``head``) are all the rig needs (parts come from the skeleton).
    rig = FigureRig(FINGER_REST, root="base", head=("base", "k1"))
    cfg = SyntheticConfig(num_videos=1, frames_per_video=3, schema=FINGER, rig=rig)
    root = build_synthetic_dataset(tmp_path / "fingers", cfg, splits=("val",))
    video = read_posetrack(root / "annotations" / "val", schema=FINGER)[0]
    assert sum(len(f.persons) for f in video.frames) >= 1
    with pytest.raises(KpdiffInputError, match="tip"):
        bad = FigureRig({k: v for k, v in FINGER_REST.items() if k != "tip"}, root="base")
        build_synthetic_dataset(tmp_path / "bad", SyntheticConfig(schema=FINGER, rig=bad))


def test_a_rig_without_head_fails_at_build_time(tmp_path: Path) -> None:
    """No head boxes would make the dataset's evaluation fail later ("head_box is missing"):
    the build refuses the rig at once, on one line naming FigureRig.head, and writes nothing."""
    cfg = SyntheticConfig(schema=FINGER, rig=FigureRig(FINGER_REST, root="base"))
    with pytest.raises(KpdiffInputError, match=r"FigureRig\.head is None") as err:
        build_synthetic_dataset(tmp_path / "fingers", cfg, splits=("val",))
    assert "\n" not in str(err.value) and "reference size" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the root nor a temporary folder
    # also where a build of that config seems to exist already (the rig is checked first)
    root = tmp_path / "old"
    root.mkdir()
    (root / synthetic.MANIFEST).write_text(json.dumps({"hash": cfg.fingerprint(("val",))}))
    with pytest.raises(KpdiffInputError, match=r"FigureRig\.head"):
        build_synthetic_dataset(root, cfg, splits=("val",))
    for head in (("k1", "k1"), ("base", "nail")):
        rig = FigureRig(FINGER_REST, root="base", head=head)
        with pytest.raises(KpdiffInputError, match="head"):
            build_synthetic_dataset(tmp_path / "bad", replace(cfg, rig=rig), splits=("val",))


def test_the_head_box_is_the_reference_size_of_any_body(tmp_path: Path) -> None:
    """What docs/data.md says of a body without a head: the head box spans the two ``head``
    joints, its diagonal is head_scale × √(1 + head_ratio²) × their distance in the image, so the
    PCKh radius (0.3 × the diagonal) is about half that distance; and the AP works on it."""
    rig = FigureRig(FINGER_REST, root="base", head=("base", "k1"), head_ratio=0.5)
    cfg = SyntheticConfig(num_videos=2, frames_per_video=4, schema=FINGER, rig=rig, seed=1)
    root = build_synthetic_dataset(tmp_path / "fingers", cfg, splits=("val",))
    videos = read_posetrack(root / "annotations" / "val", schema=FINGER)
    ratios = []
    for video in videos:
        for frame in video.frames:
            for person in frame.persons:
                assert person.head_box is not None
                (x0, y0, v0), (x1, y1, v1) = person.keypoints[:2]
                length = np.hypot(x1 - x0, y1 - y0)
                if v0 > 0 and v1 > 0 and length > 10:
                    a, b, c, d = person.head_box
                    ratios.append(np.hypot(c - a, d - b) / length)
    assert len(ratios) >= 5
    np.testing.assert_allclose(ratios, cfg.head_scale * np.hypot(1, 0.5), rtol=0.01)
    # the ground truth scored as its own prediction: every joint right
    assert posetrack_ap(videos, videos, schema=FINGER).columns["Mean"] == 100.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_videos", 0),
        ("image_size", (10, 10)),
        ("blur_prob", 1.5),
        ("persons_per_video", (3, 1)),
        ("head_scale", 0.0),
        ("split_sizes", {"train": (0, 5)}),
    ],
)
def test_bad_config(field: str, value: object) -> None:
    with pytest.raises(KpdiffInputError, match=field):
        SyntheticConfig(**{field: value})


def test_head_scale_scales_head_boxes_only(busy: Path, tmp_path: Path) -> None:
    unscaled = build_synthetic_dataset(
        tmp_path / "v1", replace(BUSY, head_scale=1.0, num_videos=2), splits=("val",)
    )
    frame = "images/val/020001_synthetic/000004.jpg"
    assert (unscaled / frame).read_bytes() == (busy / frame).read_bytes()  # same images
    ratios = []
    scaled = {v.name: v for v in read_posetrack(busy / "annotations" / "val")}
    for video in read_posetrack(unscaled / "annotations" / "val"):
        for f, g in zip(video.frames, scaled[video.name].frames, strict=True):
            for p, q in zip(f.persons, g.persons, strict=True):
                np.testing.assert_array_equal(p.keypoints, q.keypoints)
                (a0, b0, a1, b1), (c0, d0, c1, d1) = p.head_box, q.head_box
                assert abs((a0 + a1) - (c0 + c1)) < 0.03 and abs((b0 + b1) - (d0 + d1)) < 0.03
                ratios.append(np.hypot(c1 - c0, d1 - d0) / np.hypot(a1 - a0, b1 - b0))
    assert len(ratios) > 20
    np.testing.assert_allclose(ratios, BUSY.head_scale, rtol=0.02)


def test_split_sizes_and_workers_do_not_change_a_split(
    busy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spawn workers even for 18 frames (patched where `_build_split` reads it)
    monkeypatch.setattr(synthetic.build, "PARALLEL_MIN_FRAMES", 0)
    cfg = replace(BUSY, split_sizes={"train": (6, 3)})
    parallel = build_synthetic_dataset(tmp_path / "p", cfg, splits=("train", "val"), workers=2)
    serial = build_synthetic_dataset(tmp_path / "s", cfg, splits=("train", "val"), workers=1)
    assert _files(parallel) == _files(serial)
    videos = read_posetrack(parallel / "annotations" / "train")
    assert len(videos) == 6 and all(len(v.frames) == 3 for v in videos)
    files = _files(parallel)
    # The validation split is the one built alone, whatever the training split's size.
    assert {k: v for k, v in files.items() if "/val" in k or k.startswith("images/val")} == {
        k: v for k, v in _files(busy).items() if "/val" in k or k.startswith("images/val")
    }


def test_train_and_val_share_no_random_draw(tmp_path: Path) -> None:
    """Video i of train and of val come from different streams: no background, figure or
    motion in common (the first frames differ everywhere, the poses differ)."""
    cfg = replace(BUSY, num_videos=3, frames_per_video=2, occluder_prob=0.0, blur_prob=0.0)
    root = build_synthetic_dataset(tmp_path / "ds", cfg, splits=("train", "val"), workers=1)
    frames = {
        split: [cv2.imread(str(p)).astype(np.int16) for p in
                sorted((root / "images" / split).glob("*/000000.jpg"))]
        for split in ("train", "val")
    }  # fmt: skip
    for a in frames["train"]:
        for b in frames["val"]:
            assert np.mean(np.abs(a - b) < 3) < 0.2  # at most chance agreement of pixels
    poses = {
        split: [p.keypoints for v in read_posetrack(root / "annotations" / split)
                for p in v.frames[0].persons]
        for split in ("train", "val")
    }  # fmt: skip
    for a in poses["train"]:
        for b in poses["val"]:
            assert not np.allclose(a, b)


def test_custom_schemas_and_rigs_build_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from kpdiff.data.synthetic.build import _spawnable

    assert _spawnable(BUSY) and _spawnable(replace(BUSY, schema="quadruped"))
    assert not _spawnable(replace(BUSY, schema=QUADRUPED))  # an object: not rebuilt by name
    assert not _spawnable(replace(BUSY, rig=synthetic.HUMAN_RIG))


def test_the_build_shows_a_bar_per_split_only_when_asked(tmp_path: Path, capsys) -> None:
    config = SyntheticConfig(num_videos=2, frames_per_video=2, seed=3)
    build_synthetic_dataset(tmp_path / "bar", config, splits=("train", "val"), progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "val" in err and "2/2" in err and "video/s" in err
    build_synthetic_dataset(tmp_path / "quiet", config, splits=("val",), progress=False)
    assert capsys.readouterr().err == ""
    assert (
        _files(tmp_path / "bar")["annotations/val/020000_synthetic.json"]
        == _files(tmp_path / "quiet")["annotations/val/020000_synthetic.json"]
    )
