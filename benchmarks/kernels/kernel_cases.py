"""The kernel benchmark's cases: each fused kernel at DiffPose's shapes, beside its torch reference.

Shared by ``run.py`` (times every case on a GPU) and ``compile_check.py`` (compiles every case
for a GPU target and counts its memory traffic, with no GPU). Shapes: N = 10 hypotheses × batch
32 = 320 samples for sampling, batch 32 for training, K = 17 joints, 64×48 heatmaps; the lookup
at decoder widths 64/128/256 at 16×12, 32×24 and 64×48, and at the ``diffpose-b`` decoder's own
widths (192 at 16×12, 64 at 32×24, 32 at 64×48).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ENSEMBLE = 320  # N = 10 hypotheses × batch 32: what the decoder sees while sampling
TRAIN = 32  # training batch: the lookup forward + backward, the target rendering
K, H, W = 17, 64, 48
SIZES = [(16, 12), (32, 24), (64, 48)]
MODEL_WIDTHS = [(192, (16, 12)), (64, (32, 24)), (32, (64, 48))]  # diffpose-b's decoder
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

Make = Callable[[torch.device], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Case:
    """One kernel call: its inputs, its torch reference and the fused path.

    ``ideal_bytes`` is what a perfect kernel must move: every input read once and every output
    written once. ``reference(*make(device))`` and ``fused(*make(device))`` compute the same
    thing; backward cases call ``.backward`` and leave gradients on the inputs.
    """

    kernel: str
    shape: str
    dtype: str
    ideal_bytes: int
    make: Make
    reference: Callable[..., Any]
    fused: Callable[..., Any]
    backward: bool = False


def lookup_cases(dtype: str, quick: bool) -> list[Case]:
    """The lookup, ``[A ⊙ 𝔽, 𝔽]`` and ``A ⊙ 𝔽`` alone (``mask``, what DiffPose's decoder runs):
    forward at the ensemble batch, forward + backward at the training batch."""
    from kpdiff.kernels.reference import lookup_concat_reference, lookup_mask_reference
    from kpdiff.kernels.triton_lookup import Lookup, lookup_forward

    dt = DTYPES[dtype]
    es = dt.itemsize
    configs = [(256, (16, 12))] if quick else [(c, s) for c in (64, 128, 256) for s in SIZES]
    configs += [] if quick else MODEL_WIDTHS
    cases = []
    for name, concat, ref in (
        ("lookup", True, lookup_concat_reference),
        ("lookup mask", False, lookup_mask_reference),
    ):
        out = 2 if concat else 1  # output channels per channel of 𝔽
        for c, (h, w) in configs:

            def fwd_inputs(device: torch.device, c: int = c, h: int = h, w: int = w) -> tuple:
                return tuple(torch.randn(ENSEMBLE, c, h, w, device=device, dtype=dt) for _ in "xf")

            def bwd_inputs(
                device: torch.device, c: int = c, h: int = h, w: int = w, out: int = out
            ) -> tuple:
                x, f = (
                    torch.randn(TRAIN, c, h, w, device=device, dtype=dt, requires_grad=True)
                    for _ in "xf"
                )
                return x, f, torch.randn(TRAIN, out * c, h, w, device=device, dtype=dt)

            # forward: x̄ and 𝔽 in, out·C out; backward: x̄, 𝔽 and the out·C gradient in, the
            # gradients of x̄ and 𝔽 out
            fwd_bytes = (2 + out) * c
            cases.append(Case(
                f"{name} fwd", f"{ENSEMBLE}×{c}×{h}×{w}", dtype,
                es * ENSEMBLE * h * w * fwd_bytes, fwd_inputs, ref,
                lambda x, f, concat=concat: lookup_forward(x, f, concat=concat),
            ))  # fmt: skip
            cases.append(Case(
                f"{name} fwd+bwd", f"{TRAIN}×{c}×{h}×{w}", dtype,
                es * TRAIN * h * w * (fwd_bytes + (4 + out) * c), bwd_inputs,
                lambda x, f, g, ref=ref: ref(x, f).backward(g),
                lambda x, f, g, concat=concat: Lookup.apply(x, f, concat).backward(g),
                backward=True,
            ))  # fmt: skip
    return cases


def ddim_cases(dtype: str, quick: bool) -> list[Case]:
    """One DDIM update of the whole ensemble batch; η = 1 adds the noise input."""
    from kpdiff.kernels.reference import ddim_step_reference
    from kpdiff.kernels.triton_ddim import ddim_step_triton

    dt = DTYPES[dtype]
    shape = (ENSEMBLE, K, H, W)
    n = ENSEMBLE * K * H * W
    cases = []
    for eta in (0.0,) if quick else (0.0, 1.0):

        def inputs(device: torch.device, eta: float = eta) -> tuple:
            count = 3 if eta > 0 else 2
            return tuple(torch.randn(shape, device=device, dtype=dt) for _ in range(count))

        def call(fn: Callable, eta: float = eta) -> Callable:
            return lambda x, x0, z=None: fn(x, x0, 0.3, 0.6, eta=eta, clip_range=2.0, noise=z)

        ideal = dt.itemsize * n * (4 if eta > 0 else 3)
        cases.append(Case(
            f"ddim η={eta:g}", "×".join(map(str, shape)), dtype, ideal, inputs,
            call(ddim_step_reference), call(ddim_step_triton),
        ))  # fmt: skip
    return cases


def render_cases(quick: bool) -> list[Case]:
    """Gaussian targets ``[B, 17, 64, 48]`` float32 from keypoints (training: B = 32)."""
    from kpdiff.kernels.reference import render_heatmaps_reference
    from kpdiff.kernels.triton_render import render_heatmaps_triton

    cases = []
    for b in (TRAIN,) if quick else (TRAIN, ENSEMBLE):

        def inputs(device: torch.device, b: int = b) -> tuple:
            keypoints = torch.rand(b, K, 2, device=device) * 4 * max(H, W)
            return keypoints, torch.ones(b, K, device=device)

        cases.append(Case(
            "render", f"{b}×{K}×{H}×{W}", "fp32", 4 * b * K * H * W, inputs,
            render_heatmaps_reference, render_heatmaps_triton,
        ))  # fmt: skip
    return cases


def decode_cases(dtype: str, quick: bool) -> list[Case]:
    """Argmax, quarter shift and max value of ``[B, 17, 64, 48]`` heatmaps."""
    from kpdiff.kernels.reference import decode_heatmaps_reference
    from kpdiff.kernels.triton_decode import decode_heatmaps_triton

    dt = DTYPES[dtype]
    cases = []
    for b in (ENSEMBLE,) if quick else (TRAIN, ENSEMBLE):

        def inputs(device: torch.device, b: int = b) -> tuple:
            return (torch.rand(b, K, H, W, device=device, dtype=dt),)

        cases.append(Case(
            "decode", f"{b}×{K}×{H}×{W}", dtype, dt.itemsize * b * K * H * W, inputs,
            decode_heatmaps_reference, decode_heatmaps_triton,
        ))  # fmt: skip
    return cases


def all_cases(dtypes: list[str], quick: bool) -> list[Case]:
    """Every case, per dtype in ``dtypes`` (render is float32 only)."""
    cases = []
    for dtype in dtypes:
        cases += lookup_cases(dtype, quick) + ddim_cases(dtype, quick) + decode_cases(dtype, quick)
    return cases + render_cases(quick)


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--dtype``: which cases :func:`all_cases` gives."""
    parser.add_argument("--quick", action="store_true", help="one shape per kernel")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
