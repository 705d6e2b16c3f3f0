"""HeatmapDiffusion: the forward and reverse diffusion process over keypoint heatmaps.

The noise schedule and the reverse update come from any `diffusers` scheduler; kpdiff adds what
a heatmap model needs around it: the map between heatmap values and the signal range, the
x₀-prediction training loss weighted per joint, per-call sampling with a fresh scheduler (no
state shared between calls), and a float32 schedule whatever dtype the denoiser runs in.

Notation (DDPM/DDIM papers): ᾱ_t = ``alphas_cumprod[t]``,
x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε, ε ~ N(0, I).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, Protocol, overload, runtime_checkable

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from kpdiff.codecs import SignalRange
from kpdiff.errors import KpdiffInputError, check_finite, check_shape
from kpdiff.kernels import ddim_step as ddim_update

__all__ = ["Denoiser", "HeatmapDiffusion", "default_scheduler", "device_of"]


@runtime_checkable
class Denoiser(Protocol):
    """What :class:`HeatmapDiffusion` calls to denoise: any callable ``f(x_t, t, cond) -> x̂₀``.

    A plain function, an ``nn.Module`` or a bound method all qualify (the check is structural).
    """

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """Predict the clean heatmaps.

        Args:
            x_t: noisy heatmaps in signal units, ``[B, K, H, W]`` (float32).
            t: integer timesteps ``[B]`` (``0 ≤ t < T``), one per sample.
            cond: what the model is conditioned on (a tensor ``[B, …]``, or a tuple / dict of
                such tensors); :class:`~kpdiff.EnsembleSampler` repeats every tensor in it
                along dim 0.

        Returns:
            x̂₀, the predicted clean heatmaps in signal units, ``[B, K, H, W]`` (any float dtype).
        """
        ...


def default_scheduler(
    num_train_timesteps: int = 1000, clip_sample_range: float = 2.0
) -> DDIMScheduler:
    """The scheduler DiffPose uses: DDIM, cosine schedule, x₀-prediction, trailing spacing.

    ``timestep_spacing="trailing"`` gives the paper's time pairs (999→749→499→249 for 4 steps)
    and never evaluates the model at t = 0 on pure noise, as the ``"leading"`` default would
    with one step.

    Args:
        num_train_timesteps: T. Default ``1000``.
        clip_sample_range: clip x̂₀ to ``[-r, r]``; must equal the signal scale. Default ``2.0``.
    """
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        timestep_spacing="trailing",
        clip_sample=True,
        clip_sample_range=clip_sample_range,
        set_alpha_to_one=True,
    )


class HeatmapDiffusion:
    """Gaussian diffusion over heatmaps, driven by a diffusers scheduler.

    Args:
        scheduler: any diffusers scheduler configured with ``prediction_type="sample"`` (the
            denoiser predicts x₀). It is used as a template only: every :meth:`sample` call
            builds its own copy, so one instance can serve many calls and threads. Default:
            :func:`default_scheduler` (DDIM, T = 1000, cosine, trailing, clip at the scale).
        signal: the map between heatmap values ``[0, 1]`` and the signal ``[-scale, scale]``.
            Default ``SignalRange(scale=2.0)``.

    Example:
        >>> diffusion = HeatmapDiffusion()
        >>> loss = diffusion.loss(model, heatmaps, cond, weights)          # training
        >>> x0 = diffusion.sample(model, cond, heatmaps.shape, steps=4)    # inference
    """

    def __init__(
        self, scheduler: SchedulerMixin | None = None, *, signal: SignalRange | None = None
    ) -> None:
        self.signal = signal if signal is not None else SignalRange()
        if scheduler is None:
            scheduler = default_scheduler(clip_sample_range=self.signal.scale)
        prediction = scheduler.config.get("prediction_type", "epsilon")
        if prediction != "sample":
            raise KpdiffInputError(
                f"scheduler: expected prediction_type='sample' (the denoiser predicts x0), got "
                f"{prediction!r}; build it with prediction_type='sample'"
            )
        if scheduler.config.get("clip_sample", False):
            clip_range = float(scheduler.config.get("clip_sample_range", 1.0))
            if abs(clip_range - self.signal.scale) > 1e-6:
                raise KpdiffInputError(
                    f"scheduler: clip_sample_range={clip_range} must equal the signal scale "
                    f"{self.signal.scale}, or x0 estimates are clipped to the wrong range"
                )
        self._template = scheduler
        # The schedule in float32, whatever dtype the denoiser or its inputs use.
        self.alphas_cumprod = scheduler.alphas_cumprod.detach().to(torch.float32).clone()
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self._step_kwargs = set(inspect.signature(type(scheduler).step).parameters)

    def __repr__(self) -> str:
        return (
            f"HeatmapDiffusion(scheduler={type(self._template).__name__}, "
            f"T={self.num_train_timesteps}, scale={self.signal.scale})"
        )

    def new_scheduler(self) -> SchedulerMixin:
        """A fresh scheduler with the template's configuration (no shared mutable state)."""
        return type(self._template).from_config(self._template.config)

    # ----------------------------------------------------------------------------- training

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε, computed in float32.

        Args:
            x0: clean signal ``[B, …]`` (signal units).
            t: integer timesteps ``[B]``, one per sample.
            noise: ε, same shape as ``x0``.

        Returns:
            x_t, float32, same shape as ``x0``.
        """
        check_shape("t", t, (x0.shape[0],))
        if noise.shape != x0.shape:
            raise KpdiffInputError(
                f"noise: expected shape {list(x0.shape)} (as x0), got {list(noise.shape)}"
            )
        if t.is_floating_point() or int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
            raise KpdiffInputError(
                f"t: expected integer timesteps in [0, {self.num_train_timesteps}), got "
                f"{t.dtype} in [{t.min().item()}, {t.max().item()}]"
            )
        abar = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()

    def loss(
        self,
        denoiser: Denoiser,
        heatmaps: torch.Tensor,
        cond: Any,
        weights: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        t_power: float = 1.0,
        self_align: float = 0.0,
    ) -> torch.Tensor:
        """The x₀-prediction training loss: target-weighted MSE between x̂₀ and the heatmaps.

        Draws one t and one ε per sample, noises the target and asks the denoiser for x̂₀. The
        error is measured in heatmap units (``[0, 1]``), per joint, so the loss has the scale of
        HRNet's heatmap MSE whatever the signal scale.

        Args:
            denoiser: the model, a :class:`Denoiser`.
            heatmaps: target heatmaps ``[B, K, H, W]`` in ``[0, 1]``.
            cond: the denoiser's condition for these B samples.
            weights: per-joint target weights ``[B, K]`` (0 masks a joint). Default: all ones.
            generator: RNG for t, ε and the self-aligned choice. Default: the global RNG.
            t_power: t = ⌊T · u^(1/p)⌋ with u ~ U(0, 1): ``1`` is the paper's t ~ U{0 … T−1};
                ``p > 1`` trains more often at high noise, where x_t tells little and the
                condition must do the work (density ∝ t^(p−1)). Default ``1.0``.
            self_align: the share of samples whose x_t is built from the model's own x̂₀ of
                pure noise at t = T − 1 (no gradient) instead of from the target: the x_t the
                sampler feeds the second and later steps (self-aligned denoising, Ji et al.
                2023's DDP). The target stays the ground truth, so the model learns to correct
                its first guess instead of copying it. Costs one more gradient-free denoiser
                call per batch when ``> 0``. Default ``0.0``.

        Returns:
            The scalar loss: ``Σ w_bk · mean_hw (ĥ − h)² / (B·K)``.
        """
        if not t_power > 0 or not 0 <= self_align <= 1:
            raise KpdiffInputError(
                f"t_power: expected > 0, got {t_power}; self_align: expected in [0, 1], got "
                f"{self_align}"
            )
        sizes = check_shape("heatmaps", heatmaps, ("B", "K", None, None))
        check_finite("heatmaps", heatmaps)
        if weights is None:
            weights = heatmaps.new_ones(heatmaps.shape[:2])
        check_shape("weights", weights, ("B", "K"), sizes)
        b = heatmaps.shape[0]
        device = heatmaps.device
        T = self.num_train_timesteps
        if t_power == 1.0:
            t = torch.randint(0, T, (b,), device=device, generator=generator)
        else:
            u = torch.rand((b,), device=device, generator=generator)
            t = (T * u.pow(1 / t_power)).long().clamp_(0, T - 1)
        noise = torch.randn(heatmaps.shape, device=device, dtype=torch.float32, generator=generator)
        x0 = self.signal.to_signal(heatmaps.float())
        if self_align > 0:
            chosen = torch.rand((b,), device=device, generator=generator) < self_align
            start = torch.randn(heatmaps.shape, device=device, generator=generator)
            with torch.no_grad():
                t_max = torch.full((b,), T - 1, device=device, dtype=torch.long)
                first = (
                    denoiser(start, t_max, cond)
                    .float()
                    .clamp(-self.signal.scale, self.signal.scale)
                )
            x0_in = torch.where(chosen.view(-1, 1, 1, 1), first, x0)
        else:
            x0_in = x0
        x0_hat = denoiser(self.q_sample(x0_in, t, noise), t, cond)
        if x0_hat.shape != heatmaps.shape:
            raise KpdiffInputError(
                f"denoiser output: expected shape {list(heatmaps.shape)}, got {list(x0_hat.shape)}"
            )
        error = (self.signal.from_signal(x0_hat.float()) - heatmaps.float()).pow(2).mean((2, 3))
        return (error * weights.float()).mean()

    # ---------------------------------------------------------------------------- inference

    @overload
    def sample(
        self,
        denoiser: Denoiser,
        cond: Any,
        shape: tuple[int, ...] | torch.Size,
        *,
        steps: int = ...,
        generator: torch.Generator | None = ...,
        eta: float = ...,
        noise: torch.Tensor | None = ...,
        return_intermediates: Literal[False] = ...,
        renew: Callable[[torch.Tensor], torch.Tensor] | None = ...,
    ) -> torch.Tensor: ...

    @overload
    def sample(
        self,
        denoiser: Denoiser,
        cond: Any,
        shape: tuple[int, ...] | torch.Size,
        *,
        steps: int = ...,
        generator: torch.Generator | None = ...,
        eta: float = ...,
        noise: torch.Tensor | None = ...,
        return_intermediates: Literal[True],
        renew: Callable[[torch.Tensor], torch.Tensor] | None = ...,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        cond: Any,
        shape: tuple[int, ...] | torch.Size,
        *,
        steps: int = 4,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        return_intermediates: bool = False,
        renew: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the reverse process from x_T ~ N(0, I) and return the last x̂₀ as heatmaps.

        ``steps`` is chosen per call: the same trained denoiser runs with 1, 2, 4 … steps. The
        latent stays in float32; the denoiser's output is cast to float32 before each update.

        Args:
            denoiser: the model, a :class:`Denoiser`.
            cond: its condition, batched like ``shape[0]``.
            shape: ``(B, K, H, W)`` of the heatmaps to generate.
            steps: number of denoiser evaluations. Default ``4`` (DiffPose).
            generator: RNG for x_T and any stochastic update. Default: the global RNG.
            eta: DDIM's η (0 = deterministic DDIM, 1 = DDPM-like); ignored by schedulers without
                one. Default ``0.0``.
            noise: x_T to start from, ``[B, K, H, W]`` (overrides ``generator`` for x_T).
            return_intermediates: also return every step's x̂₀. Default ``False``.
            renew: applied to each x̂₀ (signal units, ``[B, K, H, W]``) before the update to the
                next timestep, never to the returned one; e.g. re-rendering a clean Gaussian at
                each joint's decoded peak (:meth:`~kpdiff.EnsembleSampler`'s ``renew``), so the
                next step sees an x_t like those of training. Default ``None``.

        Returns:
            The last x̂₀ (the paper's output), clipped to the signal range and mapped to heatmap
            units ``[0, 1]``, ``[B, K, H, W]`` float32. With ``return_intermediates``, also the
            list of all ``steps`` x̂₀ predictions in heatmap units, first to last (the last one
            is the returned sample).
        """
        if not isinstance(steps, int) or steps < 1:
            raise KpdiffInputError(f"steps: expected an integer >= 1, got {steps!r}")
        if steps > self.num_train_timesteps:
            raise KpdiffInputError(
                f"steps: expected at most T = {self.num_train_timesteps}, got {steps}"
            )
        if eta < 0:
            raise KpdiffInputError(f"eta: expected >= 0, got {eta}")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4 or min(shape) < 1:
            raise KpdiffInputError(f"shape: expected (B, K, H, W) with sizes >= 1, got {shape}")
        device = device_of(cond)
        if noise is None:
            x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            check_shape("noise", noise, shape)
            check_finite("noise", noise)
            x = noise.to(device=device, dtype=torch.float32)

        scheduler = self.new_scheduler()
        scheduler.set_timesteps(steps, device=device)
        step_kwargs: dict[str, Any] = {}
        if "generator" in self._step_kwargs:
            step_kwargs["generator"] = generator
        if "eta" in self._step_kwargs:
            step_kwargs["eta"] = eta

        intermediates: list[torch.Tensor] = []
        timesteps = scheduler.timesteps
        for i, t in enumerate(timesteps):
            t_batch = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
            x0_hat = denoiser(x, t_batch, cond)
            if x0_hat.shape != x.shape:
                raise KpdiffInputError(
                    f"denoiser output: expected shape {list(x.shape)}, got {list(x0_hat.shape)}"
                )
            x0_hat = x0_hat.float()
            if return_intermediates:
                intermediates.append(self._to_heatmaps(x0_hat))
            if i + 1 == len(timesteps):
                break  # the last x̂₀ is the answer: no update after it
            if renew is not None:
                x0_hat = renew(x0_hat).float()
            if isinstance(scheduler, DDIMScheduler):
                x = self.ddim_step(
                    x, x0_hat, t=int(t), t_prev=int(timesteps[i + 1]), eta=eta, generator=generator
                )
            else:
                x = scheduler.step(x0_hat, t, x, **step_kwargs).prev_sample.float()
        final = self._to_heatmaps(x0_hat)
        return (final, intermediates) if return_intermediates else final

    def ddim_step(
        self,
        x_t: torch.Tensor,
        x0_hat: torch.Tensor,
        *,
        t: int,
        t_prev: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One DDIM update from t to t_prev with x₀-prediction (Song et al. 2021, eq. 12).

        diffusers' ``DDIMScheduler.step`` steps from t to ``t − T // steps``, which is not the
        next timestep it evaluates when T is not a multiple of ``steps`` (3, 6, 7 … steps with
        trailing spacing); kpdiff steps to the next evaluated timestep instead, with the same
        formula:

            ε̂ = (x_t − √ᾱ_t · x̂₀) / √(1 − ᾱ_t)            (from the unclipped x̂₀, as diffusers)
            σ = η · √((1 − ᾱ_prev) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_prev)
            x_prev = √ᾱ_prev · clip(x̂₀) + √(1 − ᾱ_prev − σ²) · ε̂ + σ · z

        Args:
            x_t: the current latent ``[B, K, H, W]`` (float32).
            x0_hat: the denoiser's x̂₀ at t, same shape.
            t: current timestep; t_prev: the next one (< t); −1 means the end (ᾱ = 1).
            eta: η. Default ``0.0``.
            generator: RNG for z when η > 0.

        Returns:
            x_{t_prev}, float32, same shape.
        """
        abar = self.alphas_cumprod
        a_t = abar[t].item()
        a_prev = abar[t_prev].item() if t_prev >= 0 else 1.0
        clip = self.signal.scale if self._template.config.get("clip_sample", False) else None
        # One definition of the update: the torch reference, or its fused kernel on CUDA.
        return ddim_update(x_t, x0_hat, a_t, a_prev, eta=eta, clip_range=clip, generator=generator)

    def _to_heatmaps(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """x̂₀ in signal units, clipped to ``[-scale, scale]``, → heatmap units ``[0, 1]``."""
        return self.signal.from_signal(x0_hat.clamp(-self.signal.scale, self.signal.scale))


def device_of(cond: Any) -> torch.device:
    """The device of the first tensor found in ``cond`` (CPU when it holds none)."""
    leaves = torch.utils._pytree.tree_leaves(cond)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
