"""The lookup kernel, ``[A ⊙ 𝔽, 𝔽]`` and ``A ⊙ 𝔽`` alone, forward and backward, against its
torch references."""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff.kernels import lookup_concat, lookup_mask
from kpdiff.kernels.reference import lookup_concat_reference, lookup_mask_reference

triton_lookup = pytest.importorskip("kpdiff.kernels.triton_lookup")

LAYOUTS = st.sampled_from(["contiguous", "channel_sliced", "channels_last", "transposed", "sliced"])
SEEDS = st.integers(0, 2**16)
SHAPES = st.tuples(  # B, Cx, C, h, w: odd sizes, single channels and pixels included
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9)
)
FP32 = {"rtol": 1e-5, "atol": 1e-5}
BF16 = {"rtol": 1.6e-2, "atol": 1e-2}
# (kernel path, reference, output channels per input channel)
MODES = {
    "concat": (lookup_concat, lookup_concat_reference, 2),
    "mask": (lookup_mask, lookup_mask_reference, 1),
}


def small_blocks(small: bool) -> contextlib.AbstractContextManager:
    """Patch the kernel to 8-channel × 32-pixel tiles, so every loop runs several times."""
    if not small:
        return contextlib.nullcontext()
    return mock.patch.object(triton_lookup, "_blocks", lambda *_: (8, 32))


def grads(fn, xbar, feat, grad_out):
    x = xbar.detach().clone().requires_grad_()
    f = feat.detach().clone().requires_grad_()
    fn(x, f).backward(grad_out)
    return x.grad, f.grad


@settings(max_examples=25, deadline=None)
@given(
    shape=SHAPES,
    layouts=st.tuples(LAYOUTS, LAYOUTS),
    small=st.booleans(),
    mode=st.sampled_from(sorted(MODES)),
    seed=SEEDS,
)
def test_forward_matches_reference(device, make, shape, layouts, small, mode, seed):
    fn, reference, per = MODES[mode]
    b, cx, c, h, w = shape
    xbar = make((b, cx, h, w), layouts[0], seed=seed, scale=3.0)
    feat = make((b, c, h, w), layouts[1], seed=seed + 1)
    with small_blocks(small):
        out = fn(xbar, feat)
    assert out.shape == (b, per * c, h, w) and out.is_contiguous()
    torch.testing.assert_close(out, reference(xbar, feat), **FP32)


@settings(max_examples=15, deadline=None)
@given(
    shape=SHAPES,
    layouts=st.tuples(LAYOUTS, LAYOUTS, LAYOUTS),
    small=st.booleans(),
    mode=st.sampled_from(sorted(MODES)),
    seed=SEEDS,
)
def test_backward_matches_autograd_of_reference(device, make, shape, layouts, small, mode, seed):
    """Random normal x̄ has no ties, where every rule for amax's gradient agrees."""
    fn, reference, per = MODES[mode]
    b, cx, c, h, w = shape
    xbar = make((b, cx, h, w), layouts[0], seed=seed, scale=3.0)
    feat = make((b, c, h, w), layouts[1], seed=seed + 1)
    grad_out = make((b, per * c, h, w), layouts[2], seed=seed + 2)
    with small_blocks(small):
        got = grads(fn, xbar, feat, grad_out)
    want = grads(reference, xbar, feat, grad_out)
    torch.testing.assert_close(got[0], want[0], **FP32)
    torch.testing.assert_close(got[1], want[1], **FP32)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_ties_share_the_gradient_evenly_like_amax(device, make, mode):
    """Integer-valued x̄ has many tied maxima: the gradient is split among them, as amax does."""
    fn, reference, per = MODES[mode]
    g = torch.Generator().manual_seed(0)
    xbar = torch.randint(0, 3, (2, 6, 5, 7), generator=g).float().to(device)
    xbar[0, :, 0, 0] = 2.0  # all six channels tied
    feat, grad_out = make((2, 3, 5, 7), seed=1), make((2, 3 * per, 5, 7), seed=2)
    for small in (False, True):
        with small_blocks(small):
            got = grads(fn, xbar, feat, grad_out)
        want = grads(reference, xbar, feat, grad_out)
        torch.testing.assert_close(got[0], want[0], **FP32)
        torch.testing.assert_close(got[1], want[1], **FP32)
        assert torch.equal(got[0][0, :, 0, 0] != 0, torch.ones(6, dtype=torch.bool, device=device))


def test_one_input_requiring_grad(device, make):
    xbar, feat = make((2, 5, 3, 4), seed=0), make((2, 4, 3, 4), seed=1)
    grad_out = make((2, 8, 3, 4), seed=2)
    for which in (0, 1):
        ins = [xbar.clone(), feat.clone()]
        ref = [xbar.clone(), feat.clone()]
        ins[which].requires_grad_()
        ref[which].requires_grad_()
        lookup_concat(*ins).backward(grad_out)
        lookup_concat_reference(*ref).backward(grad_out)
        torch.testing.assert_close(ins[which].grad, ref[which].grad, **FP32)
        assert ins[1 - which].grad is None


@pytest.mark.parametrize("mode", sorted(MODES))
def test_bf16_and_mixed_dtypes(device, make, mode):
    """bf16 in, bf16 out (float32 inside); mixed inputs promote like the reference."""
    fn, reference, per = MODES[mode]
    xbar, feat = make((2, 7, 5, 3), seed=0, scale=3.0), make((2, 6, 5, 3), seed=1)
    grad_out = make((2, 6 * per, 5, 3), seed=2)
    xb, fb, gb = xbar.bfloat16(), feat.bfloat16(), grad_out.bfloat16()
    out = fn(xb, fb)
    assert out.dtype == torch.bfloat16
    ref = reference(xb.float(), fb.float())
    torch.testing.assert_close(out.float(), ref, **BF16)
    got = grads(fn, xb, fb, gb)
    want = grads(reference, xb.float(), fb.float(), gb.float())
    assert got[0].dtype == got[1].dtype == torch.bfloat16
    torch.testing.assert_close(got[0].float(), want[0], **BF16)
    torch.testing.assert_close(got[1].float(), want[1], **BF16)
    mixed = fn(xb, feat)  # A stays float32 in the kernel; the reference rounds it
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference(xb.float(), feat), **FP32)
    torch.testing.assert_close(mixed, reference(xb, feat), **BF16)


def test_no_grad_output_is_plain_tensor(device, make):
    xbar = make((1, 2, 3, 3), seed=0).requires_grad_()
    with torch.no_grad():
        out = lookup_concat(xbar, make((1, 2, 3, 3), seed=1))
    assert out.grad_fn is None


@pytest.mark.parametrize(
    ("layout", "shape", "dense"),
    [
        ("contiguous", (2, 3, 5, 7), True),
        ("channel_sliced", (2, 3, 5, 7), True),
        ("channels_last", (2, 3, 5, 7), False),
        ("transposed", (2, 3, 5, 7), False),
        ("sliced", (2, 3, 5, 7), False),
        ("transposed", (2, 3, 1, 7), True),  # one row: its stride never matters
        ("channels_last", (2, 1, 5, 7), True),  # one channel: the same memory as NCHW
        ("channels_last", (2, 3, 5, 1), False),  # one column, but rows C apart
    ],
)
def test_dense_pixels_tells_which_maps_take_the_flat_address_path(make, layout, shape, dense):
    from kpdiff.kernels._triton_common import dense_pixels

    assert dense_pixels(make(shape, layout)) is dense
