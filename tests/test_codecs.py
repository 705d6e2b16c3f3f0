"""Behaviour of the heatmap codec: round trips, flips, signal range, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff import (
    GaussianHeatmapCodec,
    KpdiffInputError,
    SignalRange,
    flip_heatmaps,
    flip_keypoints,
)

POSETRACK_PAIRS = [(3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def keypoints_inside(codec: GaussianHeatmapCodec, u: list[float], v: list[float]) -> torch.Tensor:
    """Keypoints (input pixels) at the given heatmap-pixel positions, as [1, K, 2]."""
    uv = torch.tensor([u, v], dtype=torch.float32).T[None]
    return codec.to_input_coords(uv)


@settings(max_examples=60, deadline=None)
@given(
    refine=st.sampled_from(["none", "quarter", "dark"]),
    sigma=st.sampled_from([1.5, 2.0, 3.0]),
    size=st.sampled_from([(64, 48), (32, 24), (17, 13)]),
    data=st.data(),
)
def test_encode_decode_round_trip_within_half_pixel(refine, sigma, size, data):
    codec = GaussianHeatmapCodec(heatmap_size=size, sigma=sigma, refine=refine)
    h, w = size
    k = 5
    us = data.draw(st.lists(st.floats(0, w - 1), min_size=k, max_size=k))
    vs = data.draw(st.lists(st.floats(0, h - 1), min_size=k, max_size=k))
    kp = keypoints_inside(codec, us, vs)
    heatmaps, weights = codec.encode(kp, torch.ones(1, k))
    decoded, maxvals = codec.decode(heatmaps)
    error_hm_pixels = (decoded - kp).abs().amax(-1) / codec.stride
    assert weights.eq(1).all()
    if refine == "none":  # plain argmax: half a pixel at worst, exactly on ties
        assert error_hm_pixels.max() <= 0.5
    else:
        assert error_hm_pixels.max() < 0.5
    assert maxvals.min() > 0.6  # the peak is sampled at most half a pixel from the centre


def test_quarter_and_dark_beat_plain_argmax_on_average():
    torch.manual_seed(0)
    errors = {}
    for refine in ["none", "quarter", "dark"]:
        codec = GaussianHeatmapCodec(refine=refine)
        kp = torch.rand(64, 17, 2) * torch.tensor([150.0, 210.0]) + 20  # away from the border
        decoded, _ = codec.decode(codec.encode(kp, torch.ones(64, 17))[0])
        errors[refine] = (decoded - kp).norm(dim=-1).mean().item()
    assert errors["quarter"] < errors["none"]
    assert errors["dark"] < 0.05 * codec.stride  # DARK is near exact on clean Gaussians
    assert errors["dark"] < errors["quarter"]


def test_encode_peak_one_and_absent_joints():
    codec = GaussianHeatmapCodec()
    kp = torch.tensor([[[20.5, 30.5], [10.0, 10.0], [-100.0, 50.0]]])
    vis = torch.tensor([[1.0, 0.0, 1.0]])
    heatmaps, weights = codec.encode(kp, vis)
    assert heatmaps.shape == (1, 3, 64, 48)
    # (x + 0.5) / 4 - 0.5 = 4.75: the peak lies between pixels 4 and 5, each ~0.97 of 1.
    assert heatmaps[0, 0].max() <= 1.0
    assert heatmaps[0, 0].max() > 0.9
    assert weights.tolist() == [[1.0, 0.0, 0.0]]  # invisible, and far outside the map
    assert heatmaps[0, 1].abs().sum() == 0
    assert heatmaps[0, 2].abs().sum() == 0


def test_exact_peak_at_pixel_centre():
    codec = GaussianHeatmapCodec(heatmap_size=(16, 12))
    kp = codec.to_input_coords(torch.tensor([[[5.0, 7.0]]]))
    heatmaps, _ = codec.encode(kp, torch.ones(1, 1))
    assert heatmaps[0, 0, 7, 5] == pytest.approx(1.0)
    assert heatmaps[0, 0, 7, 6] == pytest.approx(torch.exp(torch.tensor(-1 / 8)).item())


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_flip_heatmaps_matches_flip_keypoints(data):
    codec = GaussianHeatmapCodec(heatmap_size=(32, 24))
    k = 17
    xs = data.draw(st.lists(st.floats(2, codec.input_size[1] - 3), min_size=k, max_size=k))
    ys = data.draw(st.lists(st.floats(2, codec.input_size[0] - 3), min_size=k, max_size=k))
    kp = torch.tensor([xs, ys], dtype=torch.float32).T[None]
    heatmaps, _ = codec.encode(kp, torch.ones(1, k))
    flipped_kp = flip_keypoints(kp, codec.input_size[1], POSETRACK_PAIRS)
    expected, _ = codec.encode(flipped_kp, torch.ones(1, k))
    assert torch.allclose(flip_heatmaps(heatmaps, POSETRACK_PAIRS), expected, atol=1e-5)


def test_flip_keypoints_swaps_pairs_and_keeps_extra_columns():
    kp = torch.tensor([[[1.0, 2.0, 0.3], [5.0, 6.0, 0.9], [7.0, 8.0, 0.1]]])
    out = flip_keypoints(kp, 10, [(1, 2)])
    assert out.allclose(torch.tensor([[[8.0, 2.0, 0.3], [2.0, 8.0, 0.1], [4.0, 6.0, 0.9]]]))
    assert flip_keypoints(out, 10, [(1, 2)]).allclose(kp)


def test_flip_pairs_out_of_range():
    with pytest.raises(KpdiffInputError, match="flip_pairs"):
        flip_heatmaps(torch.zeros(1, 3, 4, 4), [(1, 5)])


@given(scale=st.floats(0.1, 10.0), value=st.floats(0.0, 1.0))
def test_signal_range_round_trip(scale, value):
    signal = SignalRange(scale)
    h = torch.tensor([0.0, value, 1.0])
    x = signal.to_signal(h)
    assert x[0].item() == pytest.approx(-scale)
    assert x[2].item() == pytest.approx(scale)
    assert torch.allclose(signal.from_signal(x), h, atol=1e-5)


def test_bad_input_is_named():
    codec = GaussianHeatmapCodec()
    with pytest.raises(KpdiffInputError, match=r"keypoints: expected shape \[B, K, 2\]"):
        codec.encode(torch.zeros(17, 2), torch.ones(17))
    with pytest.raises(KpdiffInputError, match=r"visibility.*K"):
        codec.encode(torch.zeros(2, 17, 2), torch.ones(2, 16))
    with pytest.raises(KpdiffInputError, match="keypoints: expected finite"):
        codec.encode(torch.full((1, 1, 2), float("nan")), torch.ones(1, 1))
    with pytest.raises(KpdiffInputError, match=r"heatmaps: expected shape \[\*, \*, 64, 48\]"):
        codec.decode(torch.zeros(1, 17, 32, 24))
    with pytest.raises(KpdiffInputError, match="heatmaps: expected finite"):
        codec.decode(torch.full((1, 1, 64, 48), float("inf")))
    with pytest.raises(KpdiffInputError, match="refine"):
        GaussianHeatmapCodec(refine="magic")  # type: ignore[arg-type]
    with pytest.raises(KpdiffInputError, match="scale"):
        SignalRange(0.0)
