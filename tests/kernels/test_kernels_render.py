"""Gaussian target rendering: reference against the codec, kernel against reference."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff import GaussianHeatmapCodec
from kpdiff.kernels import render_heatmaps, use_kernels
from kpdiff.kernels.reference import render_heatmaps_reference

triton_render = pytest.importorskip("kpdiff.kernels.triton_render")

SEEDS = st.integers(0, 2**16)
SIZES = st.tuples(st.integers(1, 13), st.integers(1, 11))
STRIDES = st.sampled_from([1.0, 2.0, 4.0, 3.0, 2.5])
SIGMAS = st.sampled_from([0.5, 1.0, 2.0, 3.0])
VIS_DTYPES = st.sampled_from([torch.bool, torch.float32, torch.int64])


def draw_inputs(
    seed: int,
    b: int,
    k: int,
    size: tuple[int, int],
    stride: float,
    vis_dtype: torch.dtype,
    device: torch.device,
    strided: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints over the map and up to ~3σ+ beyond it, and mixed visibility."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    span = torch.tensor([w * stride, h * stride, 1.0])
    kp = (torch.rand(b, k, 3, generator=g) * 1.6 - 0.3) * span  # [-0.3, 1.3] of the map
    kp = kp.to(device)[..., :2]  # a view with row stride 3
    vis = torch.randint(-1, 3, (k, b), generator=g).T.to(vis_dtype).to(device)  # transposed
    return (kp if strided else kp.contiguous()), vis


@settings(max_examples=30, deadline=None)
@given(size=SIZES, stride=STRIDES, sigma=SIGMAS, vis_dtype=VIS_DTYPES, seed=SEEDS)
def test_reference_is_the_codec(size, stride, sigma, vis_dtype, seed):
    codec = GaussianHeatmapCodec(heatmap_size=size, stride=stride, sigma=sigma)
    kp, vis = draw_inputs(seed, 2, 5, size, stride, vis_dtype, torch.device("cpu"), True)
    with use_kernels(False):
        want = codec.encode(kp, vis)
    got = render_heatmaps_reference(kp, vis, size, stride, sigma)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@settings(max_examples=30, deadline=None)
@given(
    bk=st.tuples(st.integers(1, 3), st.integers(1, 6)),
    size=SIZES,
    stride=STRIDES,
    sigma=SIGMAS,
    vis_dtype=VIS_DTYPES,
    strided=st.booleans(),
    small=st.booleans(),
    seed=SEEDS,
)
def test_kernel_matches_reference(device, bk, size, stride, sigma, vis_dtype, strided, small, seed):
    kp, vis = draw_inputs(seed, *bk, size, stride, vis_dtype, device, strided)
    block = (lambda *_: 16) if small else triton_render._block
    with mock.patch.object(triton_render, "_block", block):
        hm, weights = render_heatmaps(kp, vis, heatmap_size=size, stride=stride, sigma=sigma)
    want_hm, want_w = render_heatmaps_reference(kp, vis, size, stride, sigma)
    assert hm.dtype == weights.dtype == torch.float32
    assert torch.equal(weights, want_w)
    torch.testing.assert_close(hm, want_hm, rtol=1e-5, atol=1e-6)


def test_codec_encode_same_with_and_without_kernels(device):
    codec = GaussianHeatmapCodec(heatmap_size=(16, 12), sigma=1.5)
    kp, vis = draw_inputs(0, 4, 17, (16, 12), 4.0, torch.float32, device, False)
    with use_kernels(force=True):
        got = codec.encode(kp, vis)
    with use_kernels(False):
        want = codec.encode(kp, vis)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
