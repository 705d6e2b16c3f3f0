"""PoseDecoder: shapes for every lookup mode and fusion, gradients, the prepare/forward split,
use as a Denoiser, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._pytree import tree_map

from kpdiff import EnsembleSampler, GaussianHeatmapCodec, HeatmapDiffusion
from kpdiff.decoder import DecoderCondition, PoseDecoder, StepRescale, timestep_embedding
from kpdiff.errors import KpdiffInputError
from kpdiff.sampling import repeat_cond

K = 5


def decoder(**kw) -> PoseDecoder:
    return PoseDecoder(num_keypoints=K, feat_dim=16, dims=(16, 8, 4), heads=4, **kw)


@settings(max_examples=12, deadline=None)
@given(
    lookup=st.sampled_from(["full", "low_res", "none"]),
    fusion=st.sampled_from(["sum", "concat"]),
    b=st.integers(1, 3),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
)
def test_shapes(lookup, fusion, b, h, w):
    dec = decoder(lookup=lookup, fusion=fusion)
    cond = dec.prepare(torch.randn(b, 16, h, w))
    n = {"full": 3, "low_res": 1, "none": 1}[lookup]  # the pyramid, then the feature terms
    assert isinstance(cond, DecoderCondition) and cond.batch_size == b
    assert len(cond.pyramid) == n and len(cond.terms) == n and len(cond.tensors()) == 2 * n
    assert [c.shape for c in cond.pyramid] == [c.shape for c in cond.terms]
    x_t, t = torch.randn(b, K, 4 * h, 4 * w), torch.randint(0, 1000, (b,))
    out = dec(x_t, t, cond)
    assert out.shape == x_t.shape
    # the flat form, and the pyramid alone (the terms computed in forward): the same result
    torch.testing.assert_close(dec(x_t, t, cond.tensors()), out, rtol=0, atol=0)
    torch.testing.assert_close(dec(x_t, t, cond.pyramid), out, rtol=0, atol=0)
    # a pytree: repeat_cond (the ensemble's batch of N hypotheses) keeps the structure
    twice = repeat_cond(cond, 2)
    assert isinstance(twice, DecoderCondition) and twice.batch_size == 2 * b


@pytest.mark.parametrize("lookup", ["full", "low_res", "none"])
@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_every_parameter_gets_a_gradient(lookup, fusion):
    dec = decoder(lookup=lookup, fusion=fusion)
    torch.nn.init.normal_(dec.rescale.mlp[-1].weight)  # zero-init at start: open the t path
    feat = torch.randn(2, 16, 3, 2, requires_grad=True)
    out = dec(torch.randn(2, K, 12, 8), torch.tensor([3, 900]), dec.prepare(feat))
    out.square().mean().backward()
    assert feat.grad.abs().sum() > 0
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initial_state():
    dec = decoder(background=-2.0)
    torch.testing.assert_close(dec.head[-1].bias, torch.full((K,), -2.0))
    x = torch.randn(3, K, 4, 4)
    torch.testing.assert_close(StepRescale(K)(x, torch.tensor([0, 10, 999])), x)  # identity


@pytest.mark.parametrize("dim", [1, 6, 7, 128])
def test_timestep_embedding(dim):
    emb = timestep_embedding(torch.tensor([0, 1, 999]), dim)
    assert emb.shape == (3, dim) and torch.isfinite(emb).all()
    assert not torch.allclose(emb[1], emb[2]) or dim == 1


def test_step_changes_the_output():
    dec = decoder()
    torch.nn.init.normal_(dec.rescale.mlp[-1].weight)
    pyramid, x = dec.prepare(torch.randn(1, 16, 2, 2)), torch.randn(1, K, 8, 8)
    assert not torch.allclose(
        dec(x, torch.tensor([1]), pyramid), dec(x, torch.tensor([999]), pyramid)
    )


def test_samples_are_independent():
    dec = decoder().eval()
    pyramid = dec.prepare(torch.randn(4, 16, 2, 3))
    x, t = torch.randn(4, K, 8, 12), torch.tensor([1, 2, 3, 4])
    one = dec(x[2:3], t[2:3], tree_map(lambda p: p[2:3], pyramid))
    torch.testing.assert_close(dec(x, t, pyramid)[2:3], one, atol=1e-5, rtol=1e-4)


def test_is_a_denoiser_for_the_sampler():
    dec = decoder().eval()
    codec = GaussianHeatmapCodec(heatmap_size=(8, 12))
    sampler = EnsembleSampler(HeatmapDiffusion(), codec, num_samples=3, steps=2)
    result = sampler(dec, dec.prepare(torch.randn(2, 16, 2, 3)), (2, K, 8, 12))
    assert result.keypoints.shape == (2, K, 2) and result.heatmaps.shape == (2, K, 8, 12)


def test_bad_inputs():
    dec = decoder()
    pyramid = dec.prepare(torch.randn(2, 16, 2, 3))
    x, t = torch.randn(2, K, 8, 12), torch.tensor([1, 2])
    with pytest.raises(KpdiffInputError, match=r"cond: expected the DecoderCondition .* first 3"):
        dec(x, t, pyramid.tensors()[:2])
    with pytest.raises(KpdiffInputError, match=r"cond: .* got a DecoderCondition of 2 \+ 3"):
        dec(x, t, pyramid._replace(pyramid=pyramid.pyramid[:2]))
    with pytest.raises(KpdiffInputError, match=r"cond: .* got Tensor"):
        dec(x, t, pyramid.pyramid[0])
    with pytest.raises(KpdiffInputError, match=r"x_t: expected shape \[2, 5, 8, 12\]"):
        dec(torch.randn(2, K + 1, 8, 12), t, pyramid)
    with pytest.raises(KpdiffInputError, match="x_t"):
        dec(torch.randn(2, K, 16, 12), t, pyramid)
    with pytest.raises(KpdiffInputError, match="t: expected"):
        dec(x, torch.tensor([1]), pyramid)
    with pytest.raises(KpdiffInputError, match="lookup"):
        decoder(lookup="medium")
    with pytest.raises(KpdiffInputError, match="dims"):
        PoseDecoder(dims=(8, 4))
