"""LMSFI blocks on their own: shapes (hypothesis), the lookup path, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kpdiff.lookup as lookup_module
from kpdiff.errors import KpdiffInputError
from kpdiff.kernels import lookup_concat, lookup_mask
from kpdiff.lookup import (
    ConvMixer,
    FeaturePyramid,
    HeatmapEmbed,
    LookupInteraction,
    ScaleFusion,
    TokenMixer,
)


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 3),
    dim=st.sampled_from([4, 8, 12]),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    up=st.sampled_from([1, 2, 4]),
    mixer=st.sampled_from(["conv", "transformer"]),
    lookup=st.booleans(),
    out_dim=st.sampled_from([None, 3]),
)
def test_lookup_interaction_shapes(b, dim, h, w, up, mixer, lookup, out_dim):
    block = LookupInteraction(
        dim, out_dim=out_dim, upsample=up, mixer=mixer, lookup=lookup, heads=2
    )
    out = block(torch.randn(b, dim, h, w), torch.randn(b, dim, h, w))
    assert out.shape == (b, out_dim or dim, h * up, w * up)


@settings(max_examples=10, deadline=None)
@given(
    b=st.integers(1, 2),
    c=st.sampled_from([8, 16]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    factors=st.sampled_from([(1,), (4,), (1, 2, 4), (2, 8)]),
)
def test_feature_pyramid_shapes(b, c, h, w, factors):
    dims = [3 + i for i in range(len(factors))]
    levels = FeaturePyramid(c, dims=dims, factors=factors)(torch.randn(b, c, h, w))
    assert [t.shape for t in levels] == [
        (b, d, h * f, w * f) for d, f in zip(dims, factors, strict=True)
    ]


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 5), stride=st.sampled_from([1, 2, 4]), h=st.integers(1, 3))
def test_heatmap_embed_matches_pyramid_size(k, stride, h):
    out = HeatmapEmbed(k, 6, stride=stride)(torch.randn(2, k, 4 * h, 4 * h))
    assert out.shape == (2, 6, 4 * h // stride, 4 * h // stride)


@pytest.mark.parametrize("mixer", [ConvMixer, TokenMixer])
def test_mixers_keep_size(mixer):
    assert mixer(8, 4)(torch.randn(2, 8, 3, 5)).shape == (2, 4, 3, 5)
    assert mixer(8)(torch.randn(2, 8, 3, 5)).shape == (2, 8, 3, 5)


def test_fusion_sum_and_concat():
    outs = [torch.randn(2, 4, 6, 5) for _ in range(3)]
    torch.testing.assert_close(ScaleFusion(4)(outs), outs[0] + outs[1] + outs[2])
    assert ScaleFusion(4, mode="concat")(outs).shape == (2, 4, 6, 5)
    assert ScaleFusion(4, num_scales=1)(outs[:1]) is outs[0]


def test_lookup_goes_through_the_kernel_entry_point(monkeypatch):
    calls = []

    def spy(xbar, feat):
        calls.append((xbar.shape, feat.shape))
        return lookup_mask(xbar, feat)

    monkeypatch.setattr(lookup_module, "lookup_mask", spy)
    LookupInteraction(8)(torch.randn(2, 8, 3, 4), torch.randn(2, 8, 3, 4))
    assert calls == [((2, 8, 3, 4), (2, 8, 3, 4))]
    LookupInteraction(8, lookup=False)(torch.randn(2, 8, 3, 4), torch.randn(2, 8, 3, 4))
    assert len(calls) == 1  # Direct: no lookup


@pytest.mark.parametrize("mixer", ["conv", "transformer"])
@pytest.mark.parametrize("lookup", [True, False])
def test_split_fusion_is_fuse_of_the_concat(mixer, lookup):
    """Fuse([A ⊙ 𝔽, 𝔽]) (or Fuse([x̄, 𝔽]) for Direct), computed as the paper writes it, equals
    the block's split form, with the feature term computed there or passed in."""
    torch.manual_seed(0)
    block = LookupInteraction(8, out_dim=4, upsample=2, mixer=mixer, heads=2, lookup=lookup)
    with torch.no_grad():  # a bias on the 1×1 projection, so the term must carry it
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    xbar, feat = torch.randn(3, 8, 5, 4), torch.randn(3, 8, 5, 4)
    x = lookup_concat(block.refine(xbar), feat) if lookup else torch.cat([xbar, feat], dim=1)
    want = torch.nn.functional.interpolate(
        block.out(block.fuse(x)), scale_factor=2, mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(block(xbar, feat), want, rtol=1e-5, atol=1e-5)
    term = block.feature_term(feat)
    assert torch.equal(block(xbar, feat, term), block(xbar, feat))
    with pytest.raises(KpdiffInputError, match="feature_term"):
        block(xbar, feat, term[:, :4])


@pytest.mark.parametrize("mixer", [ConvMixer(6, 4, depth=2), TokenMixer(6, 4, heads=2)])
def test_mixers_continue_from_their_input_linear(mixer):
    x = torch.randn(2, 6, 3, 5)
    got = mixer.forward_from_input_linear(mixer.input_linear(x))
    assert torch.equal(got, mixer(x))


@pytest.mark.parametrize("mixer", ["conv", "transformer"])
def test_gradients_flow_through_the_mask(mixer):
    block = LookupInteraction(8, mixer=mixer, heads=2)
    xbar = torch.randn(2, 8, 3, 4, requires_grad=True)
    feat = torch.randn(2, 8, 3, 4, requires_grad=True)
    block(xbar, feat).square().sum().backward()
    assert xbar.grad.abs().sum() > 0 and feat.grad.abs().sum() > 0
    assert all(p.grad is not None for p in block.parameters())


def test_samples_do_not_interact():
    """GroupNorm/LayerNorm are per sample: the N hypotheses of a batch stay independent."""
    block = LookupInteraction(8, mixer="conv", upsample=2).eval()
    xbar, feat = torch.randn(4, 8, 3, 4), torch.randn(4, 8, 3, 4)
    torch.testing.assert_close(block(xbar, feat)[1:2], block(xbar[1:2], feat[1:2]))


def test_bad_inputs():
    block = LookupInteraction(8)
    with pytest.raises(KpdiffInputError, match="feat"):
        block(torch.randn(2, 8, 3, 4), torch.randn(2, 8, 3, 5))
    with pytest.raises(KpdiffInputError, match="xbar"):
        block(torch.randn(2, 7, 3, 4), torch.randn(2, 8, 3, 4))
    with pytest.raises(KpdiffInputError, match="heads"):
        LookupInteraction(8, mixer="transformer", heads=3)
    with pytest.raises(KpdiffInputError, match="mixer"):
        LookupInteraction(8, mixer="mlp")
    with pytest.raises(KpdiffInputError, match="upsample"):
        LookupInteraction(8, upsample=0)
    with pytest.raises(KpdiffInputError, match="powers of 2"):
        FeaturePyramid(8, dims=(4,), factors=(3,))
    with pytest.raises(KpdiffInputError, match="fusion"):
        ScaleFusion(4, mode="max")
    with pytest.raises(KpdiffInputError, match="3 maps"):
        ScaleFusion(4)([torch.zeros(1, 4, 2, 2)])
    with pytest.raises(KpdiffInputError, match="feat"):
        FeaturePyramid(8)(torch.randn(1, 4, 2, 2))
