"""The DDIM update: reference against diffusers' DDIMScheduler.step, kernel against reference."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff import HeatmapDiffusion
from kpdiff.kernels import ddim_step, use_kernels
from kpdiff.kernels.reference import ddim_step_reference

LAYOUTS = st.sampled_from(["contiguous", "transposed", "sliced"])
SEEDS = st.integers(0, 2**16)
SHAPES = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)
FP32 = {"rtol": 1e-5, "atol": 1e-5}
BF16 = {"rtol": 1.6e-2, "atol": 1e-2}


def scheduler(clip: float | None, alpha_to_one: bool = True) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        timestep_spacing="trailing",
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
        set_alpha_to_one=alpha_to_one,
    )


@settings(max_examples=40, deadline=None)
@given(
    steps=st.sampled_from([1, 2, 4, 5, 10, 50]),
    index=st.integers(0, 49),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    clip=st.sampled_from([None, 1.0, 2.0]),
    alpha_to_one=st.booleans(),
    as_tensor=st.booleans(),
    seed=SEEDS,
)
def test_reference_matches_diffusers_step(
    make, steps, index, eta, clip, alpha_to_one, as_tensor, seed
):
    """Against step() run in float64, and in float32 where its float32 coefficients are exact.

    At η = 1 diffusers' float32 √(1 − ᾱ_prev − σ²) cancels catastrophically (see
    ``ddim_coefficients``), so there only the float64 run is the ground truth.
    """
    s = scheduler(clip, alpha_to_one)
    s.set_timesteps(steps)
    t = int(s.timesteps[index % steps])
    prev_t = t - 1000 // steps  # what step() uses
    alpha_t = s.alphas_cumprod[t]
    alpha_prev = s.alphas_cumprod[prev_t] if prev_t >= 0 else s.final_alpha_cumprod
    if not as_tensor:
        alpha_t, alpha_prev = float(alpha_t), float(alpha_prev)
    cpu = torch.device("cpu")
    x_t = make((3, 2, 5, 4), seed=seed, device=cpu)
    x0 = make((3, 2, 5, 4), seed=seed + 1, device=cpu, scale=2.5)
    z = make((3, 2, 5, 4), seed=seed + 2, device=cpu)
    got = ddim_step_reference(x_t, x0, alpha_t, alpha_prev, eta=eta, clip_range=clip, noise=z)
    if eta < 1:
        want32 = s.step(x0, t, x_t, eta=eta, variance_noise=z).prev_sample
        torch.testing.assert_close(got, want32, **FP32)
    s.alphas_cumprod = s.alphas_cumprod.double()
    s.final_alpha_cumprod = torch.as_tensor(s.final_alpha_cumprod, dtype=torch.float64)
    want64 = s.step(x0.double(), t, x_t.double(), eta=eta, variance_noise=z.double()).prev_sample
    torch.testing.assert_close(got, want64.float(), **FP32)


ALPHAS = st.tuples(st.floats(1e-4, 0.9999), st.floats(0.0, 1.0)).map(
    lambda p: (p[0] * p[1], p[0])  # 0 ≤ ᾱ_t ≤ ᾱ_prev < 1
)


@settings(max_examples=30, deadline=None)
@given(
    shape=SHAPES,
    layouts=st.tuples(LAYOUTS, LAYOUTS, LAYOUTS),
    alphas=ALPHAS | st.just((0.3, 1.0)),
    eta=st.sampled_from([0.0, 0.5, 1.0]),
    clip=st.sampled_from([None, 2.0]),
    seed=SEEDS,
)
def test_kernel_matches_reference(device, make, shape, layouts, alphas, eta, clip, seed):
    alpha_t, alpha_prev = alphas
    x_t = make(shape, layouts[0], seed=seed)
    x0 = make(shape, layouts[1], seed=seed + 1, scale=2.5)
    z = make(shape, layouts[2], seed=seed + 2)
    got = ddim_step(x_t, x0, alpha_t, alpha_prev, eta=eta, clip_range=clip, noise=z)
    want = ddim_step_reference(x_t, x0, alpha_t, alpha_prev, eta=eta, clip_range=clip, noise=z)
    assert got.shape == x_t.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, **FP32)


def test_kernel_draws_noise_like_the_reference_path(device, make):
    x_t, x0 = make((4, 3, 6, 5), seed=0), make((4, 3, 6, 5), seed=1)
    outs = []
    for mode in ({"force": True}, {"enabled": False}):
        with use_kernels(**mode):
            gen = torch.Generator(device).manual_seed(7)
            outs.append(ddim_step(x_t, x0, 0.2, 0.6, eta=1.0, clip_range=2.0, generator=gen))
    torch.testing.assert_close(outs[0], outs[1], **FP32)


def test_bf16(device, make):
    x_t, x0 = make((2, 3, 7, 5), seed=0), make((2, 3, 7, 5), seed=1, scale=2.5)
    z = make((2, 3, 7, 5), seed=2)
    xb, x0b, zb = x_t.bfloat16(), x0.bfloat16(), z.bfloat16()
    got = ddim_step(xb, x0b, 0.25, 0.5, eta=0.5, clip_range=2.0, noise=zb)
    assert got.dtype == torch.bfloat16
    want = ddim_step_reference(
        xb.float(), x0b.float(), 0.25, 0.5, eta=0.5, clip_range=2.0, noise=zb
    )
    torch.testing.assert_close(got.float(), want, **BF16)
    mixed = ddim_step(x_t, x0b, 0.25, 0.5)  # the latent in float32, x̂₀ from a bf16 model
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, ddim_step_reference(x_t, x0b, 0.25, 0.5), **FP32)


def denoiser(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in model whose x̂₀ leaves the clip range."""
    return 3.0 * torch.tanh(x + cond) - t.view(-1, 1, 1, 1) / 1000


@pytest.mark.parametrize("steps", [4, 3])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_heatmap_diffusion_sample_same_with_and_without_kernels(device, steps, eta):
    diffusion = HeatmapDiffusion()
    cond = torch.randn(6, 1, 1, 1, generator=torch.Generator().manual_seed(0)).to(device)
    outs = []
    for mode in ({"force": True}, {"enabled": False}):
        with use_kernels(**mode):
            gen = torch.Generator(device).manual_seed(3)
            outs.append(diffusion.sample(denoiser, cond, (6, 2, 8, 6), steps=steps, eta=eta,
                                         generator=gen))  # fmt: skip
    torch.testing.assert_close(outs[0], outs[1], **FP32)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_fast_path_matches_scheduler_step(device, make, eta):
    """Where diffusers' step() goes to the next evaluated timestep (T divisible by steps).

    step() runs in float64 (its float32 run is off by ~1e-4 at η = 1, see ddim_coefficients).
    """
    diffusion = HeatmapDiffusion()
    s = diffusion.new_scheduler()
    s.set_timesteps(4)
    s.alphas_cumprod = s.alphas_cumprod.double()
    s.final_alpha_cumprod = torch.as_tensor(s.final_alpha_cumprod, dtype=torch.float64)
    x_t, x0 = make((5, 2, 6, 4), seed=0), make((5, 2, 6, 4), seed=1, scale=3.0)
    for t, t_prev in [(999, 749), (749, 499), (249, -1)]:
        gen = torch.Generator(device).manual_seed(5)
        got = diffusion.ddim_step(x_t, x0, t=t, t_prev=t_prev, eta=eta, generator=gen)
        gen = torch.Generator(device).manual_seed(5)
        z = torch.randn(x_t.shape, generator=gen, device=device)
        want = s.step(x0.double(), t, x_t.double(), eta=eta, variance_noise=z.double())
        torch.testing.assert_close(got, want.prev_sample.float(), **FP32)
