"""The top-down clip pipeline: shapes, one affine per clip, edges, flip, coordinates, errors."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from kpdiff.codecs import GaussianHeatmapCodec, flip_heatmaps
from kpdiff.data.clips import (
    AugmentConfig,
    ClipConfig,
    ClipSample,
    TopDownClipDataset,
    clip_indices,
    crop_to_image,
)
from kpdiff.data.posetrack import read_posetrack
from kpdiff.data.schemas import POSETRACK
from kpdiff.data.structures import VideoAnnotation
from kpdiff.data.synthetic import QUADRUPED, SyntheticConfig, build_synthetic_dataset
from kpdiff.data.transforms import apply_affine, box_to_center_scale, crop_affine, invert_affine
from kpdiff.errors import KpdiffInputError

SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample",
    )
)
DARK = GaussianHeatmapCodec(refine="dark")
FLIP_ONLY = AugmentConfig(rotation_prob=0, scale_range=(1, 1), flip_prob=1, half_body_prob=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SyntheticConfig(num_videos=2, frames_per_video=6, persons_per_video=(2, 2), seed=5)
    return build_synthetic_dataset(tmp_path_factory.mktemp("clips") / "ds", cfg, splits=("val",))


def _write_video(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.png" for i in range(len(frames))]  # PNG: lossless
    for path, frame in zip(paths, frames, strict=True):
        cv2.imwrite(str(path), frame)
    return paths


def test_items_shapes_and_collate(synth: Path) -> None:
    videos = read_posetrack(synth / "annotations" / "val")
    ds = TopDownClipDataset.from_videos(videos, synth, augment=AugmentConfig())
    assert len(ds) == sum(len(f.persons) for v in videos for f in v.frames)
    item = ds[0]
    assert item["clip"].shape == (5, 3, 256, 192) and item["clip"].dtype == torch.float32
    assert item["heatmaps"].shape == (17, 64, 48) and item["weights"].shape == (17,)
    assert item["keypoints"].shape == (17, 3)
    assert item["affine"].shape == item["inverse_affine"].shape == (2, 3)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["clip"].shape == (3, 5, 3, 256, 192)
    assert batch["inverse_affine"].shape == (3, 2, 3) and len(batch["video"]) == 3
    assert batch["track_id"].shape == (3,)


def test_targets_map_back_to_ground_truth(synth: Path) -> None:
    """Decoding the item's heatmaps and mapping back gives the GT image keypoints (± 0.5 px)."""
    videos = read_posetrack(synth / "annotations" / "val")
    ds = TopDownClipDataset.from_videos(videos, synth, augment=AugmentConfig(), codec=DARK)
    torch.manual_seed(0)
    checked = 0
    for i in range(0, len(ds), 3):
        item, sample = ds[i], ds.samples[i]
        decoded, _ = DARK.decode(item["heatmaps"][None])
        back = crop_to_image(decoded, item)[0].numpy()
        image_weights = item["weights"][torch.as_tensor(np.argsort(item["joint_order"]))]
        # away from the heatmap border, where the Gaussian is whole
        crop = item["keypoints"][:, :2].numpy()
        inner = (crop > 12).all(1) & (crop[:, 0] < 180) & (crop[:, 1] < 244)
        inner = inner[np.argsort(item["joint_order"])]
        ok = (image_weights.numpy() > 0) & inner
        assert np.abs(back[ok] - sample.keypoints[ok, :2]).max() < 0.5
        checked += int(ok.sum())
    assert checked > 50


def test_static_video_gives_identical_clip_frames(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    paths = _write_video(tmp_path / "static", [frame] * 7)
    ds = TopDownClipDataset.from_boxes(
        paths, [[40, 20, 60, 80]], key=3, augment=AugmentConfig(rotation_prob=1.0)
    )
    torch.manual_seed(1)
    clip = ds[0]["clip"]
    assert clip.abs().sum() > 0
    for t in range(1, 5):
        assert torch.equal(clip[t], clip[0])


def test_one_affine_for_the_whole_clip(tmp_path: Path) -> None:
    """Each clip frame is exactly its own frame warped by the item's affine."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (100, 140, 3), dtype=np.uint8) for _ in range(5)]
    paths = _write_video(tmp_path / "noise", frames)
    ds = TopDownClipDataset.from_boxes(paths, [[30, 10, 50, 70]], key=2, augment=AugmentConfig())
    torch.manual_seed(2)
    item = ds[0]
    lut = ds._lut
    for t, frame in enumerate(frames):
        warped = cv2.warpAffine(frame, item["affine"], (192, 256), flags=cv2.INTER_LINEAR)
        expected = np.stack([lut[c][warped[..., 2 - c]] for c in range(3)])
        assert np.allclose(item["clip"][t].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("key", "edge", "expected"),
    [
        (0, "clamp", [0, 0, 0, 1, 2]),
        (1, "clamp", [0, 0, 1, 2, 3]),
        (1, "repeat", [1, 0, 1, 2, 3]),
        (5, "clamp", [3, 4, 5, 5, 5]),
        (4, "clamp", [2, 3, 4, 5, 5]),
        (4, "repeat", [2, 3, 4, 5, 4]),
        (0, "repeat", [0, 0, 0, 1, 2]),
    ],
)
def test_edge_policies(tmp_path: Path, key: int, edge: str, expected: list[int]) -> None:
    assert clip_indices(key, 6, 2, edge) == expected
    frames = [np.full((64, 48, 3), 30 * i, np.uint8) for i in range(6)]  # frame i has grey 30 i
    paths = _write_video(tmp_path / "grey", frames)
    ds = TopDownClipDataset.from_boxes(
        paths, [[8, 8, 30, 40]], key=key, config=ClipConfig(edge=edge)
    )
    clip = ds[0]["clip"]
    grey = clip[:, 0, 128, 96] * 0.229 + 0.485  # undo the red channel's normalisation
    assert torch.round(grey * 255 / 30).long().tolist() == expected


def test_delta_zero_and_larger(tmp_path: Path) -> None:
    paths = _write_video(tmp_path / "v", [np.zeros((32, 32, 3), np.uint8)] * 3)
    for delta in (0, 3):
        ds = TopDownClipDataset.from_boxes(
            paths, [[4, 4, 20, 20]], key=1, config=ClipConfig(delta=delta)
        )
        assert ds[0]["clip"].shape[0] == 2 * delta + 1


def test_flip_swaps_joints_consistently(synth: Path) -> None:
    videos = read_posetrack(synth / "annotations" / "val")
    plain = TopDownClipDataset.from_videos(videos, synth)
    flipped = TopDownClipDataset.from_videos(videos, synth, augment=FLIP_ONLY)
    a, b = plain[1], flipped[1]
    assert b["flipped"] and not a["flipped"]
    perm = POSETRACK.flip_permutation
    assert np.array_equal(b["joint_order"], perm)
    expected = a["keypoints"][perm].clone()
    expected[:, 0] = 191 - expected[:, 0]
    assert torch.allclose(b["keypoints"], expected, atol=1e-4)
    assert torch.allclose(
        b["heatmaps"], flip_heatmaps(a["heatmaps"][None], POSETRACK.flip_pairs)[0], atol=1e-5
    )
    assert torch.allclose(b["clip"], a["clip"].flip(-1))
    # back in the image, a flipped item's keypoints are the ground truth in the image's order
    back = crop_to_image(
        b["keypoints"][None], {k: b[k][None] for k in ("inverse_affine", "joint_order")}
    )
    truth = torch.as_tensor(flipped.samples[1].keypoints, dtype=torch.float32)
    assert torch.allclose(back[0], truth, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    box=st.tuples(
        st.floats(-200, 1500), st.floats(-200, 900), st.floats(16, 900), st.floats(16, 900)
    ),
    rel=st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95)),
    rotation=st.floats(-45, 45),
    scale=st.floats(0.65, 1.35),
    flip=st.booleans(),
)
def test_round_trip_within_half_pixel(box, rel, rotation, scale, flip) -> None:
    """image → crop (affine) → heatmap (encode) → crop (decode) → image, within 0.5 px."""
    box = np.asarray(box)
    center, s = box_to_center_scale(box, 192 / 256)
    affine = crop_affine(center, s * scale, (256, 192), rotation=rotation, flip=flip)
    point = box[:2] + np.asarray(rel) * box[2:]
    crop = apply_affine(point[None], affine)
    if not ((crop >= 4).all() and crop[0, 0] <= 187 and crop[0, 1] <= 251):
        return  # the Gaussian must be whole for sub-pixel decoding
    heatmaps, _ = DARK.encode(torch.tensor(crop[None]), torch.ones(1, 1))
    decoded, _ = DARK.decode(heatmaps)
    back = crop_to_image(decoded, {"inverse_affine": invert_affine(affine)[None]})
    assert np.abs(back[0, 0].double().numpy() - point).max() < 0.5


def test_pixels_and_keypoints_share_one_convention(tmp_path: Path) -> None:
    """A bright dot drawn at a sub-pixel point lands, after warping, where the affine maps it."""
    point = np.array([61.3, 47.8])
    ys, xs = np.mgrid[0:120, 0:160]
    blob = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * 3.0**2))
    frame = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    paths = _write_video(tmp_path / "dot", [frame])
    kpts = np.zeros((17, 3))
    kpts[0] = (*point, 1)
    for rotation in (0.0, 30.0):
        sample = ClipSample(
            "dot", tuple(map(str, paths)), 0, np.array([40.0, 20, 50, 60]), keypoints=kpts
        )
        aug = AugmentConfig(
            rotation=rotation, rotation_prob=1, scale_range=(1, 1), flip_prob=0, half_body_prob=0
        )
        item = TopDownClipDataset([sample], augment=aug, config=ClipConfig(delta=0))[0]
        weight = item["clip"][0, 0].numpy() - item["clip"][0, 0].numpy().min()
        yy, xx = np.mgrid[0:256, 0:192]
        centroid = np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()
        assert np.abs(centroid - item["keypoints"][0, :2].numpy()).max() < 0.1


def test_other_schema_with_half_body(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_videos=1, frames_per_video=3, schema=QUADRUPED, seed=2)
    root = build_synthetic_dataset(tmp_path / "dogs", cfg, splits=("val",))
    videos = read_posetrack(root / "annotations" / "val", schema=QUADRUPED)
    aug = AugmentConfig(half_body_prob=1.0, half_body_min_joints=4, flip_prob=1.0)
    ds = TopDownClipDataset.from_videos(videos, root, schema=QUADRUPED, augment=aug)
    assert len(ds) > 0
    item = ds[0]
    assert item["heatmaps"].shape == (13, 64, 48)
    assert np.array_equal(item["joint_order"], QUADRUPED.flip_permutation)


def test_detector_boxes_for_validation(synth: Path) -> None:
    videos = read_posetrack(synth / "annotations" / "val")
    path = synth / "detections" / "val_boxes.json"
    ds = TopDownClipDataset.from_videos(videos, synth, detections=path)
    assert len(ds) > 0
    assert all(s.score >= 0.2 and s.keypoints is None for s in ds.samples)
    item = ds[0]
    assert item["weights"].sum() == 0 and item["score"] >= 0.2
    everything = TopDownClipDataset.from_videos(
        videos, synth, detections=path, config=ClipConfig(min_box_score=0.0)
    )
    assert len(everything) > len(ds)


def test_frame_cache_is_bounded_and_shared(synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    videos = read_posetrack(synth / "annotations" / "val")
    ds = TopDownClipDataset.from_videos(videos, synth, config=ClipConfig(cache_size=4))
    reads = []
    real = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda p, *a: reads.append(p) or real(p, *a))
    for i in range(len(ds)):
        ds[i]
        assert len(ds._cache._frames) <= 4
    assert len(reads) < 5 * len(ds) / 2  # two persons a frame share the decoded neighbours


def test_augmentation_reproducible_under_torch_seed(synth: Path) -> None:
    videos = read_posetrack(synth / "annotations" / "val")
    ds = TopDownClipDataset.from_videos(videos, synth, augment=AugmentConfig())
    torch.manual_seed(7)
    a = ds[2]
    torch.manual_seed(7)
    b = ds[2]
    assert np.array_equal(a["affine"], b["affine"]) and torch.equal(a["clip"], b["clip"])


def test_bad_inputs(tmp_path: Path) -> None:
    paths = _write_video(tmp_path / "v", [np.zeros((32, 32, 3), np.uint8)] * 3)
    missing = tmp_path / "v" / "000009.png"
    ds = TopDownClipDataset.from_boxes([*paths, missing], [[4, 4, 20, 20]], key=3)
    with pytest.raises(KpdiffInputError, match=r"000009\.png"):
        ds[0]
    with pytest.raises(KpdiffInputError, match="delta"):
        ClipConfig(delta=-1)
    with pytest.raises(KpdiffInputError, match="'empty'"):
        TopDownClipDataset.from_videos([VideoAnnotation("empty")], tmp_path)
    with pytest.raises(KpdiffInputError, match="frames"):
        TopDownClipDataset.from_boxes([], [[0, 0, 10, 10]], key=0)
    with pytest.raises(KpdiffInputError, match="key"):
        TopDownClipDataset.from_boxes(paths, [[0, 0, 10, 10]], key=3)
    with pytest.raises(KpdiffInputError, match="box"):
        TopDownClipDataset.from_boxes(paths, [[0, 0, 0, 10]], key=0)[0]
    (tmp_path / "v" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(KpdiffInputError, match=r"broken\.png"):
        TopDownClipDataset.from_boxes([tmp_path / "v" / "broken.png"], [[0, 0, 10, 10]], key=0)[0]


@pytest.mark.skipif(not (SAMPLE / "videos").is_dir(), reason="PoseTrack18 sample not available")
def test_real_video_clip_from_a_box() -> None:
    frames = sorted((SAMPLE / "videos" / "000001_mpiinew_test").glob("*.jpg"))
    assert len(frames) == 10
    ds = TopDownClipDataset.from_boxes(frames, [[600, 250, 120, 300]], key=5, scores=[0.9])
    item = ds[0]
    assert item["clip"].shape == (5, 3, 256, 192) and item["score"] == pytest.approx(0.9)
    assert not torch.equal(item["clip"][0], item["clip"][2])  # real motion between frames
    assert item["image_path"].endswith("000005.jpg")
    start = TopDownClipDataset.from_boxes(frames, [[600, 250, 120, 300]], key=0)[0]["clip"]
    assert torch.equal(start[0], start[2]) and torch.equal(start[1], start[2])  # clamped
