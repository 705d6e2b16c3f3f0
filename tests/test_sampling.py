"""EnsembleSampler: one batch for N hypotheses, aggregation, spread, determinism, learning."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kpdiff import (
    EnsembleSampler,
    GaussianHeatmapCodec,
    HeatmapDiffusion,
    KpdiffInputError,
    repeat_cond,
)

SIZE = (16, 12)
CODEC = GaussianHeatmapCodec(heatmap_size=SIZE, sigma=1.5)


class CountingDenoiser:
    """x̂₀ = mix of x_t and a fixed target, so hypotheses differ; counts calls and batch sizes."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target
        self.batches: list[int] = []

    def __call__(self, x_t, t, cond):
        assert cond.shape[0] == x_t.shape[0]  # the condition was repeated with the batch
        self.batches.append(x_t.shape[0])
        target = self.target.repeat(x_t.shape[0] // self.target.shape[0], 1, 1, 1)
        return 0.8 * target + 0.2 * x_t.clamp(-2, 2) * (t.view(-1, 1, 1, 1) > 0)


def make_target(b=2, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, k, 2, generator=g) * 40 + 4
    heatmaps, _ = CODEC.encode(kp, torch.ones(b, k))
    return kp, HeatmapDiffusion().signal.to_signal(heatmaps)


def test_hypotheses_run_as_one_batch_with_cond_repeated_not_recomputed():
    _, x0 = make_target()
    cond = torch.arange(2.0).view(2, 1)
    denoiser = CountingDenoiser(x0)
    sampler = EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=10, steps=4)
    result = sampler(denoiser, cond, x0.shape, generator=torch.Generator().manual_seed(0))
    assert denoiser.batches == [20] * 4  # N·B per call, one call per step
    assert result.heatmaps.shape == (2, 3, *SIZE)
    assert result.keypoints.shape == (2, 3, 2)
    assert result.scores.shape == result.spread.shape == (2, 3)
    assert result.hypothesis_keypoints.shape == (10, 2, 3, 2)


def test_repeat_cond_layout_and_structures():
    cond = {"feat": torch.arange(3.0).view(3, 1), "pyr": (torch.ones(3, 2), "tag")}
    out = repeat_cond(cond, 2)
    assert out["feat"].view(-1).tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    assert out["pyr"][0].shape == (6, 2) and out["pyr"][1] == "tag"


def test_identical_hypotheses_give_zero_spread():
    kp, x0 = make_target()
    sampler = EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=6, steps=2)
    result = sampler(lambda x, t, c: x0.repeat(6, 1, 1, 1), torch.zeros(2, 1), x0.shape)
    assert torch.equal(result.spread, torch.zeros(2, 3))
    assert (result.keypoints - kp).abs().max() < 0.5 * CODEC.stride


def test_same_seed_same_output_and_chunking_does_not_change_it():
    _, x0 = make_target()
    cond = torch.zeros(2, 1)
    results = []
    for chunk in [None, None, 3, 1]:
        sampler = EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=7, chunk_size=chunk)
        results.append(
            sampler(
                CountingDenoiser(x0), cond, x0.shape, generator=torch.Generator().manual_seed(3)
            )
        )
    for other in results[1:]:
        assert torch.allclose(results[0].heatmaps, other.heatmaps, atol=1e-6)
    other_seed = EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=7)(
        CountingDenoiser(x0), cond, x0.shape, generator=torch.Generator().manual_seed(4)
    )
    assert not torch.allclose(results[0].heatmaps, other_seed.heatmaps)


def test_chunking_bounds_the_batch():
    _, x0 = make_target()
    denoiser = CountingDenoiser(x0)
    EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=5, steps=2, chunk_size=2)(
        denoiser, torch.zeros(2, 1), x0.shape
    )
    assert denoiser.batches == [4, 4, 4, 4, 2, 2]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), aggregate=st.sampled_from(["mean", "median"]))
def test_aggregate_equals_reduction_of_members(n, aggregate):
    _, x0 = make_target()
    sampler = EnsembleSampler(HeatmapDiffusion(), CODEC, num_samples=n, aggregate=aggregate)
    result = sampler(
        CountingDenoiser(x0),
        torch.zeros(2, 1),
        x0.shape,
        keep_hypotheses=True,
        generator=torch.Generator().manual_seed(n),
    )
    hyps = result.hypotheses
    assert hyps is not None and hyps.shape == (n, 2, 3, *SIZE)
    expected = hyps.mean(0) if aggregate == "mean" else hyps.median(0).values
    assert torch.allclose(result.heatmaps, expected)
    members_kp = torch.stack([CODEC.decode(h)[0] for h in hyps])
    assert torch.allclose(result.hypothesis_keypoints, members_kp)
    centre = members_kp.mean(0)
    spread = ((members_kp - centre) ** 2).sum(-1).mean(0).sqrt()
    assert torch.allclose(result.spread, spread)


def test_spread_measures_disagreement_in_pixels():
    sampler = EnsembleSampler(HeatmapDiffusion(), CODEC)
    a = CODEC.to_input_coords(torch.tensor([[[3.0, 5.0]]]))
    b = CODEC.to_input_coords(torch.tensor([[[7.0, 5.0]]]))
    hyps = torch.stack([CODEC.encode(p, torch.ones(1, 1))[0] for p in (a, b)])
    result = sampler.aggregate_hypotheses(hyps)
    # Two hypotheses 4 heatmap px = 16 input px apart: each is 8 px from their mean.
    assert result.spread.item() == pytest.approx(8.0)


def test_bad_input_is_named():
    diffusion = HeatmapDiffusion()
    with pytest.raises(KpdiffInputError, match="num_samples"):
        EnsembleSampler(diffusion, CODEC, num_samples=0)
    with pytest.raises(KpdiffInputError, match="steps"):
        EnsembleSampler(diffusion, CODEC, steps=0)
    with pytest.raises(KpdiffInputError, match="chunk_size"):
        EnsembleSampler(diffusion, CODEC, chunk_size=0)
    with pytest.raises(KpdiffInputError, match="aggregate"):
        EnsembleSampler(diffusion, CODEC, aggregate="max")  # type: ignore[arg-type]
    sampler = EnsembleSampler(diffusion, CODEC)
    with pytest.raises(KpdiffInputError, match=r"shape: expected \(B, K, 16, 12\)"):
        sampler(lambda x, t, c: x, torch.zeros(1), (1, 3, 64, 48))
    with pytest.raises(KpdiffInputError, match="num_samples"):
        sampler(lambda x, t, c: x, torch.zeros(1), (1, 3, *SIZE), num_samples=-1)
    with pytest.raises(KpdiffInputError, match="hypotheses"):
        sampler.aggregate_hypotheses(torch.zeros(2, 3, *SIZE))


class TinyDenoiser(nn.Module):
    """x̂₀ from x_t and a keypoint position: CoordConv features → small conv net."""

    def __init__(self, size=SIZE, width=32) -> None:
        super().__init__()
        h, w = size
        ys, xs = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys])[None])
        self.net = nn.Sequential(
            nn.Conv2d(1 + 2 + 2 + 1, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, x_t, t, cond):  # cond: keypoint position / input size, [B, 2]
        b = x_t.shape[0]
        offset = self.grid - cond.view(b, 2, 1, 1)
        t_map = (t.float() / 1000).view(b, 1, 1, 1).expand(b, 1, *x_t.shape[-2:])
        return self.net(torch.cat([x_t, offset, offset**2, t_map], dim=1))


def test_tiny_learned_denoiser_finds_held_out_peaks():
    """A conditional denoiser learns to put the peak within 1 heatmap pixel of new positions."""
    torch.manual_seed(0)
    diffusion = HeatmapDiffusion()
    model = TinyDenoiser()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    in_h, in_w = CODEC.input_size
    scale = torch.tensor([in_w, in_h], dtype=torch.float32)

    def batch(n, g):
        kp = torch.rand(n, 1, 2, generator=g) * (scale - 8) + 4
        heatmaps, weights = CODEC.encode(kp, torch.ones(n, 1))
        return kp, heatmaps, weights, (kp[:, 0] / scale)

    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        _, heatmaps, weights, cond = batch(64, g)
        loss = diffusion.loss(model, heatmaps, cond, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    kp, _, _, cond = batch(32, torch.Generator().manual_seed(123))  # held out
    sampler = EnsembleSampler(diffusion, CODEC, num_samples=4, steps=4)
    with torch.no_grad():
        result = sampler(model, cond, (32, 1, *SIZE), generator=torch.Generator().manual_seed(0))
    error = (result.keypoints - kp).norm(dim=-1) / CODEC.stride  # heatmap pixels
    assert error.max() < 1.0, error.max()


def test_renew_re_renders_clean_gaussians_at_the_decoded_peaks():
    _, x0 = make_target(b=2, k=3)
    sampler = EnsembleSampler(HeatmapDiffusion(), CODEC, renew=True)
    blurred = torch.nn.functional.avg_pool2d(x0, 3, 1, 1) * 0.5  # a lower, wider blob
    clean = sampler.renew_x0(blurred)
    heatmaps = sampler.diffusion.signal.from_signal(clean)
    got_kp, peaks = CODEC.decode(heatmaps)
    want_kp, want_peaks = CODEC.decode(sampler.diffusion.signal.from_signal(blurred))
    torch.testing.assert_close(got_kp, want_kp, atol=0.6, rtol=0)
    torch.testing.assert_close(peaks, want_peaks.clamp(0, 1), atol=0.05, rtol=0)
    # the shape is the codec's Gaussian again, scaled by the peak height
    ideal, _ = CODEC.encode(want_kp, torch.ones(2, 3))
    torch.testing.assert_close(heatmaps, ideal * want_peaks[..., None, None], atol=1e-5, rtol=0)
    # with one step there is nothing to renew: same result as without
    a = sampler(CountingDenoiser(x0), torch.zeros(2, 1), x0.shape, steps=1,
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    sampler.renew = False
    b = sampler(CountingDenoiser(x0), torch.zeros(2, 1), x0.shape, steps=1,
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(a.heatmaps, b.heatmaps)
