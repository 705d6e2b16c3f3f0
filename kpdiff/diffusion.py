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
from kpdiff.errors import (
    KpdiffInputError,
    check_callable,
    check_dtype,
    check_finite,
    check_finite_tree,
    check_generator,
    check_int,
    check_number,
    check_range,
    check_shape,
    check_sizes,
)
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
        if not isinstance(x0, torch.Tensor) or x0.dim() < 1:
            raise KpdiffInputError(f"x0: expected a tensor [B, …], got {_describe(x0)}")
        check_shape("t", t, (x0.shape[0],))
        check_shape("noise", noise, list(x0.shape))
        check_dtype("x0", x0, "real")
        check_dtype("noise", noise, "real")
        if t.numel() == 0:
            return torch.empty(x0.shape, device=x0.device, dtype=torch.float32)
        want = f"t: expected integer timesteps in [0, {self.num_train_timesteps}), got {t.dtype}"
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise KpdiffInputError(want)
        if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
            raise KpdiffInputError(f"{want} in [{t.min().item()}, {t.max().item()}]")
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
        check_cond: bool = True,
    ) -> torch.Tensor:
        """The x₀-prediction training loss: target-weighted MSE between x̂₀ and the heatmaps.

        Draws one t and one ε per sample, noises the target and asks the denoiser for x̂₀. The
        error is measured in heatmap units (``[0, 1]``), per joint, so the loss has the scale of
        HRNet's heatmap MSE whatever the signal scale.

        Args:
            denoiser: the model, a :class:`Denoiser`.
            heatmaps: target heatmaps ``[B, K, H, W]`` (all sizes ≥ 1), floating point, values
                in ``[0, 1]`` (so finite).
            cond: the denoiser's condition for these B samples; its tensors must be finite.
            weights: per-joint target weights ``[B, K]``, finite and ≥ 0 (0 masks a joint),
                float, integer or bool. Default: all ones.
            generator: RNG for t, ε and the self-aligned choice, a ``torch.Generator``.
                Default: the global RNG.
            t_power: t = ⌊T · u^(1/p)⌋ with u ~ U(0, 1): ``1`` is the paper's t ~ U{0 … T−1};
                ``p > 1`` trains more often at high noise, where x_t tells little and the
                condition must do the work (density ∝ t^(p−1)). Default ``1.0``.
            self_align: the share of samples whose x_t is built from the model's own x̂₀ of
                pure noise at t = T − 1 (no gradient) instead of from the target: the x_t the
                sampler feeds the second and later steps (self-aligned denoising, Ji et al.
                2023's DDP). The target stays the ground truth, so the model learns to correct
                its first guess instead of copying it. Costs one more gradient-free denoiser
                call per batch when ``> 0``. Default ``0.0``.
            check_cond: check that ``cond``'s tensors are finite (one device sync). DiffPose
                passes ``False``: it checks the clips its condition comes from, and a condition
                that overflows under fp16 autocast is the training loop's to handle (the
                GradScaler skips the step), not an input error. Default ``True``.

        Returns:
            The scalar loss: ``Σ w_bk · mean_hw (ĥ − h)² / (B·K)``. Its finiteness is not
            checked: a diverged denoiser gives NaN (the training loop decides what to do).

        Raises:
            KpdiffInputError: any input above out of its range, naming it, or a denoiser output
                of the wrong shape.
        """
        check_callable("denoiser", denoiser, "a callable f(x_t, t, cond) -> x0_hat")
        t_power = check_number("t_power", t_power, low=0.0, low_open=True)
        self_align = check_number("self_align", self_align, low=0.0, high=1.0)
        check_generator("generator", generator)
        sizes = check_shape("heatmaps", heatmaps, ("B", "K", None, None))
        if min(heatmaps.shape) < 1:
            raise KpdiffInputError(
                f"heatmaps: expected [B, K, H, W] with all sizes >= 1 (the loss of an empty "
                f"batch is undefined), got {list(heatmaps.shape)}"
            )
        check_dtype("heatmaps", heatmaps)
        check_range("heatmaps", heatmaps, 0.0, 1.0)
        if weights is None:
            weights = heatmaps.new_ones(heatmaps.shape[:2])
        check_shape("weights", weights, ("B", "K"), sizes)
        check_dtype("weights", weights, "nocomplex")
        check_range("weights", weights, 0.0, None)
        if check_cond:
            check_finite_tree("cond", cond)
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
                first = denoiser(start, t_max, cond)
                check_shape("denoiser output", first, list(heatmaps.shape))
                first = first.float().clamp(-self.signal.scale, self.signal.scale)
            x0_in = torch.where(chosen.view(-1, 1, 1, 1), first, x0)
        else:
            x0_in = x0
        x0_hat = denoiser(self.q_sample(x0_in, t, noise), t, cond)
        check_shape("denoiser output", x0_hat, list(heatmaps.shape))
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
            cond: its condition, batched like ``shape[0]``; its tensors must be finite.
            shape: ``(B, K, H, W)`` of the heatmaps to generate, four integers ≥ 1.
            steps: number of denoiser evaluations, an integer in ``[1, T]``. Default ``4``
                (DiffPose).
            generator: RNG for x_T and any stochastic update, a ``torch.Generator``. Default:
                the global RNG.
            eta: DDIM's η, a finite number ≥ 0 (0 = deterministic DDIM, 1 = DDPM-like); ignored
                by schedulers without one. Default ``0.0``.
            noise: x_T to start from, ``[B, K, H, W]``, floating point, finite (overrides
                ``generator`` for x_T).
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

        Raises:
            KpdiffInputError: any input above out of its range, naming it; a denoiser (or
                ``renew``) output of the wrong shape or with NaN/inf values (named ``"denoiser
                output"``, with the step), instead of returning NaN.
        """
        check_callable("denoiser", denoiser, "a callable f(x_t, t, cond) -> x0_hat")
        steps = check_int("steps", steps, low=1)
        if steps > self.num_train_timesteps:
            raise KpdiffInputError(
                f"steps: expected at most T = {self.num_train_timesteps}, got {steps}"
            )
        eta = check_number("eta", eta, low=0.0)
        shape = check_sizes("shape", shape, ("B", "K", "H", "W"))
        check_generator("generator", generator)
        if renew is not None:
            check_callable("renew", renew, "a callable f(x0_hat) -> x0_hat or None")
        check_finite_tree("cond", cond)
        device = device_of(cond)
        if noise is None:
            x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            check_shape("noise", noise, shape)
            check_dtype("noise", noise)
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
            x0_hat = _checked_output(
                "denoiser output", denoiser(x, t_batch, cond), x.shape, i, len(timesteps), t
            )
            if return_intermediates:
                intermediates.append(self._to_heatmaps(x0_hat))
            if i + 1 == len(timesteps):
                break  # the last x̂₀ is the answer: no update after it
            if renew is not None:
                x0_hat = _checked_output("renew output", renew(x0_hat), x.shape, i, steps, t)
            if isinstance(scheduler, DDIMScheduler):
                try:
                    x = self.ddim_step(
                        x, x0_hat, t=int(t), t_prev=int(timesteps[i + 1]), eta=eta,
                        generator=generator,
                    )  # fmt: skip
                except KpdiffInputError as err:  # x_t, x0_hat are ours: name the user's inputs
                    if not str(err).startswith("x_t, x0_hat:"):
                        raise
                    raise KpdiffInputError(
                        f"noise, denoiser output: the DDIM update at step {i + 1} of "
                        f"{len(timesteps)} (t = {int(t)}) overflows float32; expected noise ~ "
                        f"N(0, I) and a denoiser output in signal units (about ±"
                        f"{self.signal.scale:g})"
                    ) from None
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
            x_t: the current latent ``[B, K, H, W]`` (float32), finite.
            x0_hat: the denoiser's x̂₀ at t, same shape, finite.
            t: current timestep; t_prev: the next one (< t); −1 means the end (ᾱ = 1).
            eta: η, a finite number ≥ 0. Default ``0.0``.
            generator: RNG for z when η > 0.

        Returns:
            x_{t_prev}, float32, same shape.

        Raises:
            KpdiffInputError: timesteps out of ``[-1, T)`` or not ordered, or what
                :func:`kpdiff.kernels.ddim_step` refuses.
        """
        T = self.num_train_timesteps
        t = check_int("t", t, low=0, high=T - 1)
        t_prev = check_int("t_prev", t_prev, low=-1, high=t - 1)
        abar = self.alphas_cumprod
        a_t = abar[t].item()
        a_prev = abar[t_prev].item() if t_prev >= 0 else 1.0
        clip = self.signal.scale if self._template.config.get("clip_sample", False) else None
        # One definition of the update: the torch reference, or its fused kernel on CUDA.
        return ddim_update(x_t, x0_hat, a_t, a_prev, eta=eta, clip_range=clip, generator=generator)

    def _to_heatmaps(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """x̂₀ in signal units, clipped to ``[-scale, scale]``, → heatmap units ``[0, 1]``."""
        return self.signal.from_signal(x0_hat.clamp(-self.signal.scale, self.signal.scale))


def _checked_output(
    name: str, out: Any, shape: tuple[int, ...] | torch.Size, i: int, steps: int, t: Any
) -> torch.Tensor:
    """``out`` as float32 after checking it is a real tensor of ``shape`` with finite values."""
    check_shape(name, out, list(shape))
    check_dtype(name, out, "real")
    out = out.float()
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise KpdiffInputError(
            f"{name}: expected finite values, got {bad} NaN/inf entries at step {i + 1} of "
            f"{steps} (t = {int(t)}); check the model (weights, dtype overflow) and its inputs"
        )
    return out


def _describe(x: Any) -> str:
    return f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def device_of(cond: Any) -> torch.device:
    """The device of the first tensor found in ``cond`` (CPU when it holds none)."""
    leaves = torch.utils._pytree.tree_leaves(cond)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
