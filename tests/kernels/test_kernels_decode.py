"""Heatmap decoding: reference against the codec, kernel against reference (ties included)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff import GaussianHeatmapCodec
from kpdiff.kernels import decode_heatmaps, use_kernels
from kpdiff.kernels.reference import decode_heatmaps_reference

triton_decode = pytest.importorskip("kpdiff.kernels.triton_decode")

LAYOUTS = st.sampled_from(["contiguous", "channel_sliced", "channels_last", "transposed", "sliced"])
SEEDS = st.integers(0, 2**16)
SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 13), st.integers(1, 11))
STRIDES = st.sampled_from([4.0, 1.0, 3.0, 2.5])
REFINES = st.sampled_from(["quarter", "none"])


def heatmaps(make, shape, layout, seed, ties, dtype=torch.float32):
    """Random maps; with ``ties``, values in {0, 1, 2} so maxima and neighbours often tie."""
    x = make(shape, layout, seed=seed)
    if ties:
        x = (x * 1.5).round().clamp(0, 2)
    return x.to(dtype)


@settings(max_examples=30, deadline=None)
@given(shape=SHAPES, stride=STRIDES, refine=REFINES, ties=st.booleans(), seed=SEEDS)
def test_reference_is_the_codec(make, shape, stride, refine, ties, seed):
    hm = heatmaps(make, shape, "contiguous", seed, ties).cpu()
    codec = GaussianHeatmapCodec(heatmap_size=shape[2:], stride=stride, refine=refine)
    with use_kernels(False):
        want = codec.decode(hm)
    got = decode_heatmaps_reference(hm, stride=stride, refine=refine)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@settings(max_examples=40, deadline=None)
@given(
    shape=SHAPES,
    layout=LAYOUTS,
    stride=STRIDES,
    refine=REFINES,
    ties=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    small=st.booleans(),
    seed=SEEDS,
)
def test_kernel_matches_reference_exactly(
    device, make, shape, layout, stride, refine, ties, dtype, small, seed
):
    """Same argmax (first among ties), same shift, same max: equal to the last bit."""
    hm = heatmaps(make, shape, layout, seed, ties, dtype)
    block = (lambda *_: 8) if small else triton_decode._block
    with mock.patch.object(triton_decode, "_block", block):
        kp, maxvals = decode_heatmaps(hm, stride=stride, refine=refine)
    want_kp, want_max = decode_heatmaps_reference(hm, stride=stride, refine=refine)
    assert kp.dtype == maxvals.dtype == torch.float32
    assert torch.equal(kp, want_kp)
    assert torch.equal(maxvals, want_max)


def test_first_maximum_wins(device):
    hm = torch.zeros(1, 2, 5, 6, device=device)
    hm[0, 0, 1, 4] = hm[0, 0, 3, 2] = 1.0  # row-major: (v=1, u=4) comes first
    hm[0, 1, 4, 0] = hm[0, 1, 4, 5] = 1.0
    for small in (False, True):
        with mock.patch.object(triton_decode, "_block", lambda *_, s=small: 8 if s else 32):
            kp, _ = decode_heatmaps(hm, stride=1.0, refine="none")
        assert kp.tolist() == [[[4.0, 1.0], [0.0, 4.0]]]


def test_codec_decode_same_with_and_without_kernels(device, make):
    codec = GaussianHeatmapCodec(heatmap_size=(16, 12))
    hm = make((2, 5, 16, 12), seed=3)
    with use_kernels(force=True):
        got = codec.decode(hm)
    with use_kernels(False):
        want = codec.decode(hm)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
