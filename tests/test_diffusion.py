"""HeatmapDiffusion: forward process, loss, oracle sampling with every scheduler, bad input."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff import (
    Denoiser,
    GaussianHeatmapCodec,
    HeatmapDiffusion,
    KpdiffInputError,
    SignalRange,
    default_scheduler,
)


def schedulers() -> dict[str, object]:
    common = dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    return {
        "ddim": default_scheduler(),
        "ddpm": DDPMScheduler(
            **common, timestep_spacing="trailing", clip_sample=True, clip_sample_range=2.0
        ),
        "dpmsolver++": DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", timestep_spacing="trailing"
        ),
    }


def target_heatmaps(b: int = 3, k: int = 5, size=(16, 12), seed: int = 0) -> torch.Tensor:
    codec = GaussianHeatmapCodec(heatmap_size=size)
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, k, 2, generator=g) * torch.tensor([size[1] * 4.0, size[0] * 4.0])
    return codec.encode(kp, torch.ones(b, k))[0]


class Oracle:
    """Returns the true x0 and records the (t, x_t) it was asked about."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x0 = x0
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        self.calls.append((t.clone(), x_t.clone()))
        return self.x0


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++"])
@pytest.mark.parametrize("steps", range(1, 11))
def test_oracle_denoiser_recovers_x0(name, steps):
    diffusion = HeatmapDiffusion(schedulers()[name])
    heatmaps = target_heatmaps()
    oracle = Oracle(diffusion.signal.to_signal(heatmaps))
    out, intermediates = diffusion.sample(
        oracle,
        heatmaps,
        heatmaps.shape,
        steps=steps,
        generator=torch.Generator().manual_seed(steps),
        return_intermediates=True,
    )
    assert torch.allclose(out, heatmaps, atol=1e-5)
    assert len(oracle.calls) == steps == len(intermediates)
    assert torch.equal(intermediates[-1], out)
    ts = [int(t[0]) for t, _ in oracle.calls]
    assert ts == sorted(ts, reverse=True) and ts[0] == 999  # trailing spacing starts at T - 1


@pytest.mark.parametrize("steps", range(1, 9))
def test_ddim_oracle_walks_the_forward_marginals(steps):
    """With the true x0, deterministic DDIM keeps x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε_T at every step."""
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps()
    x0 = diffusion.signal.to_signal(heatmaps)
    noise = torch.randn(heatmaps.shape, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0)
    diffusion.sample(oracle, heatmaps, heatmaps.shape, steps=steps, noise=noise)
    for t, x_t in oracle.calls:
        expected = diffusion.q_sample(x0, t, noise)
        assert torch.allclose(x_t, expected, atol=1e-4), int(t[0])


def test_paper_time_pairs():
    """Trailing spacing gives the time sequence of the paper for 1, 2, 4 and 5 steps."""
    expected = {1: [999], 2: [999, 499], 4: [999, 749, 499, 249], 5: [999, 799, 599, 399, 199]}
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=1)
    for steps, ts in expected.items():
        oracle = Oracle(diffusion.signal.to_signal(heatmaps))
        diffusion.sample(oracle, heatmaps, heatmaps.shape, steps=steps)
        assert [int(t[0]) for t, _ in oracle.calls] == ts


def test_q_sample_matches_definition_and_is_float32():
    diffusion = HeatmapDiffusion()
    x0 = torch.randn(4, 2, 3, 3, dtype=torch.bfloat16)
    noise = torch.randn(4, 2, 3, 3)
    t = torch.tensor([0, 10, 500, 999])
    out = diffusion.q_sample(x0, t, noise)
    assert out.dtype == torch.float32
    abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(out, abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise)
    assert diffusion.alphas_cumprod.dtype == torch.float32
    assert diffusion.alphas_cumprod[-1] < 1e-3 < diffusion.alphas_cumprod[0]


def test_low_precision_denoiser_keeps_float32_latent():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps()
    x0 = diffusion.signal.to_signal(heatmaps).to(torch.bfloat16)
    seen = []

    def half_denoiser(x_t, t, cond):
        seen.append(x_t.dtype)
        return x0

    out = diffusion.sample(half_denoiser, None, heatmaps.shape, steps=3)
    assert seen == [torch.float32] * 3
    assert out.dtype == torch.float32
    assert torch.allclose(out, heatmaps, atol=1e-2)  # bf16 has ~3 significant digits


def test_loss_is_zero_for_oracle_and_respects_weights():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=4, k=3)
    x0 = diffusion.signal.to_signal(heatmaps)
    assert diffusion.loss(lambda x, t, c: x0, heatmaps, None).item() == pytest.approx(0, abs=1e-10)

    def wrong_on_joint_0(x_t, t, cond):
        out = x0.clone()
        out[:, 0] = diffusion.signal.scale  # heatmap value 1 everywhere: error (1 - h)²
        return out

    weights = torch.ones(4, 3)
    full = diffusion.loss(wrong_on_joint_0, heatmaps, None, weights)
    expected = (1 - heatmaps[:, 0]).pow(2).mean((1, 2)).sum() / (4 * 3)
    assert full.item() == pytest.approx(expected.item(), rel=1e-5)
    weights[:, 0] = 0
    assert diffusion.loss(wrong_on_joint_0, heatmaps, None, weights).item() == pytest.approx(0)


def test_loss_draws_per_sample_timesteps():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=64, k=1)
    seen = []
    diffusion.loss(lambda x, t, c: seen.append(t) or x, heatmaps, None)
    t = seen[0]
    assert t.shape == (64,) and t.dtype == torch.long
    assert len(set(t.tolist())) > 32  # not one shared t


def test_no_state_shared_between_calls_or_instances():
    template = default_scheduler()
    a, b = HeatmapDiffusion(template), HeatmapDiffusion(template)
    heatmaps = target_heatmaps()
    denoiser = lambda x, t, c: x.clamp(-2, 2) * 0.5  # deterministic, x-dependent
    noise = torch.randn(heatmaps.shape, generator=torch.Generator().manual_seed(0))
    first = a.sample(denoiser, None, heatmaps.shape, steps=4, noise=noise)
    b.sample(denoiser, None, heatmaps.shape, steps=7, noise=noise)  # would reset shared state
    a.sample(denoiser, None, heatmaps.shape, steps=2, noise=noise)
    again = a.sample(denoiser, None, heatmaps.shape, steps=4, noise=noise)
    assert torch.equal(first, again)
    assert template.num_inference_steps is None  # the template itself is never stepped


def test_same_seed_same_output_with_eta():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps()
    denoiser = lambda x, t, c: x * 0.3
    runs = [
        diffusion.sample(
            denoiser,
            None,
            heatmaps.shape,
            steps=4,
            eta=1.0,
            generator=torch.Generator().manual_seed(7),
        )
        for _ in range(2)
    ]
    assert torch.equal(*runs)
    other = diffusion.sample(
        denoiser, None, heatmaps.shape, steps=4, eta=1.0, generator=torch.Generator().manual_seed(8)
    )
    assert not torch.equal(runs[0], other)


def test_denoiser_protocol_is_structural():
    assert isinstance(lambda x, t, c: x, Denoiser)


@settings(max_examples=20, deadline=None)
@given(steps=st.integers(-3, 0) | st.floats(1.0, 4.0))
def test_bad_steps_rejected(steps):
    with pytest.raises(KpdiffInputError, match="steps"):
        HeatmapDiffusion().sample(lambda x, t, c: x, None, (1, 1, 4, 4), steps=steps)


def test_bad_input_is_named():
    diffusion = HeatmapDiffusion()
    with pytest.raises(KpdiffInputError, match="shape"):
        diffusion.sample(lambda x, t, c: x, None, (1, 4, 4), steps=1)
    with pytest.raises(KpdiffInputError, match="denoiser output"):
        diffusion.sample(lambda x, t, c: x[:, :1], None, (1, 2, 4, 4), steps=1)
    with pytest.raises(KpdiffInputError, match="noise"):
        diffusion.sample(lambda x, t, c: x, None, (1, 2, 4, 4), noise=torch.zeros(1, 2, 4, 5))
    with pytest.raises(KpdiffInputError, match="heatmaps: expected finite"):
        diffusion.loss(lambda x, t, c: x, torch.full((1, 1, 4, 4), float("nan")), None)
    with pytest.raises(KpdiffInputError, match="weights"):
        diffusion.loss(lambda x, t, c: x, torch.zeros(2, 3, 4, 4), None, torch.ones(2, 4))
    with pytest.raises(KpdiffInputError, match="t: expected integer timesteps"):
        diffusion.q_sample(torch.zeros(1, 1), torch.tensor([1000]), torch.zeros(1, 1))
    with pytest.raises(KpdiffInputError, match="prediction_type"):
        HeatmapDiffusion(DDIMScheduler())
    with pytest.raises(KpdiffInputError, match="clip_sample_range"):
        HeatmapDiffusion(default_scheduler(clip_sample_range=1.0))
    assert (
        HeatmapDiffusion(
            default_scheduler(clip_sample_range=1.0), signal=SignalRange(1.0)
        ).signal.scale
        == 1.0
    )


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers_where_diffusers_is_right(eta):
    """With 4 steps T // steps is the true gap, so diffusers' DDIM step is the reference."""
    diffusion = HeatmapDiffusion()
    scheduler = diffusion.new_scheduler()
    scheduler.set_timesteps(4)
    x_t = torch.randn(2, 3, 8, 6)
    x0_hat = torch.randn(2, 3, 8, 6) * 1.5  # partly outside [-2, 2]: clipping matters
    ours = diffusion.ddim_step(
        x_t, x0_hat, t=749, t_prev=499, eta=eta, generator=torch.Generator().manual_seed(0)
    )
    theirs = scheduler.step(
        x0_hat,
        749,
        x_t,
        eta=eta,
        variance_noise=torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0)),
    ).prev_sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_t_power_biases_timesteps_towards_high_noise():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=4000, k=1, size=(4, 4))
    seen = {}
    for power in (1.0, 3.0):
        record: list[torch.Tensor] = []

        def model(x, t, c, record=record):
            record.append(t)
            return x

        g = torch.Generator().manual_seed(0)
        diffusion.loss(model, heatmaps, None, generator=g, t_power=power)
        seen[power] = record[0].float() / diffusion.num_train_timesteps
        assert int(record[0].min()) >= 0 and int(record[0].max()) < 1000
    # density ∝ t^(p−1): mean p / (p + 1); uniform 1/2, p = 3 gives 3/4
    assert seen[1.0].mean().item() == pytest.approx(0.5, abs=0.02)
    assert seen[3.0].mean().item() == pytest.approx(0.75, abs=0.02)


def test_self_align_builds_x_t_from_the_models_first_guess():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=6, k=2)
    guess = torch.full_like(heatmaps, -2.0)  # the model's x̂₀ of pure noise: "no joint"
    calls = []

    def model(x_t, t, cond):
        calls.append((t.clone(), x_t.clone()))
        return guess

    g = torch.Generator().manual_seed(0)
    diffusion.loss(model, heatmaps, None, generator=g, self_align=1.0)
    (t_first, _), (t, x_t) = calls  # one gradient-free call at T − 1, then the trained one
    assert torch.all(t_first == 999)
    g = torch.Generator().manual_seed(0)
    t_again = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(heatmaps.shape, generator=g)
    assert torch.equal(t, t_again)
    expected = diffusion.q_sample(guess, t, noise)  # built from the guess, not the target
    torch.testing.assert_close(x_t, expected)
    # the target stays the ground truth: the loss is the guess' error
    loss = diffusion.loss(model, heatmaps, None, generator=g, self_align=1.0)
    assert loss.item() == pytest.approx(heatmaps.pow(2).mean().item(), rel=1e-5)
    with pytest.raises(KpdiffInputError, match="self_align"):
        diffusion.loss(model, heatmaps, None, self_align=1.5)
    with pytest.raises(KpdiffInputError, match="t_power"):
        diffusion.loss(model, heatmaps, None, t_power=0.0)


def test_renew_is_applied_between_steps_only():
    diffusion = HeatmapDiffusion()
    heatmaps = target_heatmaps(b=2, k=2)
    x0 = diffusion.signal.to_signal(heatmaps)
    renewed = []

    def renew(x):
        renewed.append(x)
        return torch.zeros_like(x)

    oracle = Oracle(x0)
    out = diffusion.sample(oracle, None, x0.shape, steps=3, renew=renew)
    assert len(renewed) == 2  # before the 2nd and 3rd steps, not after the last
    torch.testing.assert_close(out, heatmaps)  # the returned x̂₀ is never renewed
    # the 2nd step's x_t was built from the renewed (zero) x̂₀, not the oracle's
    plain = Oracle(x0)
    diffusion.sample(plain, None, x0.shape, steps=3, noise=oracle.calls[0][1])
    assert not torch.allclose(oracle.calls[1][1], plain.calls[1][1])
