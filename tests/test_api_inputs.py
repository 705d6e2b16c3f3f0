"""Bad input never gives a traceback from inside torch, nor a silent wrong number.

Property-based fuzzing of the public API's tensor inputs: shapes (0-sized dims, wrong ranks),
dtypes, NaN / inf / huge values and arguments of the wrong type. Every call must end in one of
exactly two ways:

- a :class:`~kpdiff.errors.KpdiffError` with a one-line message that starts with the name of
  the argument at fault (``"eta: expected a finite number >= 0, got nan"``), or
- a result of the right shape whose values are all finite.

``TRIED`` counts the inputs tried per property and outcome; ``KPDIFF_FUZZ_API_REPORT=FILE``
writes them as JSON (``benchmarks/fuzz_report.py`` makes docs/robustness.md's table of them).
The first part holds one regression test per case found by the user study.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpdiff.codecs import GaussianHeatmapCodec
from kpdiff.diffpose import PRESETS, DiffPose
from kpdiff.diffusion import HeatmapDiffusion
from kpdiff.errors import KpdiffError, KpdiffInputError
from kpdiff.kernels import (
    ddim_step,
    decode_heatmaps,
    lookup_concat,
    lookup_mask,
    render_heatmaps,
    use_kernels,
)
from kpdiff.sampling import EnsembleSampler

TRIED: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("KPDIFF_FUZZ_API_EXAMPLES", "80"))  # per property (CI: 80)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # CI replays the same inputs (a red run can be rerun and debugged); the exploring runs of
    # benchmarks/fuzz_report.py set KPDIFF_FUZZ_RANDOM=1 to draw new ones each time.
    derandomize=os.environ.get("KPDIFF_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    target = os.environ.get("KPDIFF_FUZZ_API_REPORT")
    if target:
        Path(target).write_text(json.dumps(dict(sorted(TRIED.items())), indent=1) + "\n")


def finite_shaped(x: Any, shape: tuple[int, ...]) -> None:
    assert isinstance(x, torch.Tensor), type(x)
    assert tuple(x.shape) == tuple(shape), (tuple(x.shape), shape)
    assert bool(torch.isfinite(x).all()), "non-finite values out of an accepted input"


def outcome(
    prop: str, allowed: set[str], call: Callable[[], Any], check: Callable[[Any], None]
) -> str:
    """Run ``call``: a KpdiffError naming an ``allowed`` argument, or ``check(result)`` passes."""
    TRIED[prop] += 1
    try:
        result = call()
    except KpdiffError as err:
        message = str(err)
        assert "\n" not in message, message
        names = message.split(": ", 1)[0]
        for name in names.split(", "):
            assert re.sub(r"\[.*\]$", "", name) in allowed, (names, message)
        TRIED[f"{prop}:error"] += 1
        return "error"
    check(result)
    TRIED[f"{prop}:ok"] += 1
    return "ok"


# ---------------------------------------------------------------------------- drawing tensors

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPES = st.sampled_from(FLOATS * 3 + [torch.int64, torch.uint8, torch.bool, torch.complex64])
SPECIAL = st.sampled_from([NAN, INF, -INF, 1e30, -3e38, 1e300, 0.0, -1.0])


@st.composite
def tensors(
    draw: st.DrawFn,
    shape: tuple[int, ...],
    *,
    low: float = -1.0,
    high: float = 1.0,
    dtypes: st.SearchStrategy[torch.dtype] = DTYPES,
    bad_shape: bool = True,
) -> Any:
    """Mostly a well-formed ``shape`` tensor of values in ``[low, high]``; sometimes another
    rank, a 0-sized or wrong dim, another dtype, special values or not a tensor at all."""
    kind = draw(st.sampled_from(["good"] * 6 + ["shape", "dtype", "special", "object"]))
    if kind == "object" and bad_shape:
        return draw(st.sampled_from([None, 1.5, "heatmaps", [[0.0, 1.0]], (1, 2)]))
    dims = list(shape)
    if kind == "shape" and bad_shape:
        how = draw(st.sampled_from(["rank+", "rank-", "zero", "size"]))
        i = draw(st.integers(0, max(len(dims) - 1, 0)))
        if how == "rank+":
            dims.insert(i, draw(st.integers(1, 2)))
        elif how == "rank-" and dims:
            dims.pop(i)
        elif how == "zero" and dims:
            dims[i] = 0
        elif dims:
            dims[i] = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    x = torch.rand(dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = low + (high - low) * x
    if kind == "special" and x.numel():
        flat = x.view(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(SPECIAL)
    dtype = draw(dtypes) if kind in ("dtype", "special") else torch.float32
    if dtype.is_complex:
        return x.to(torch.complex64)
    if not dtype.is_floating_point and dtype != torch.bool:
        x = x.nan_to_num(0.0, 0.0, 0.0).clamp(-1e6, 1e6).round()
        x = x.abs() if dtype == torch.uint8 else x
    return x.to(dtype)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0, 1, -1, 2, True, None, "1", NAN, INF, 1e-30]),
)


def weighted(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``bad`` one time in eight, else ``good`` (``one_of`` would pick each about equally, so
    that a call with five arguments would almost never have all of them valid)."""
    coins = st.tuples(st.booleans(), st.booleans(), st.booleans())
    return coins.flatmap(lambda c: bad if all(c) else good)


def number(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value from ``good``, sometimes any number or a wrong type."""
    return weighted(good, NUMBERS)


def mostly(good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """``good`` seven times out of eight, else one of ``bad``."""
    return weighted(st.just(good), st.sampled_from(bad))


# ------------------------------------------------------------------------- regression cases

DIFFUSION = HeatmapDiffusion()


def shrink(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return 0.9 * x


def test_loss_refuses_heatmaps_out_of_range_nan_weights_and_empty_batches():
    h = torch.rand(2, 3, 8, 6)
    with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected values in \[0, 1\], got"):
        DIFFUSION.loss(shrink, h * 100, None)
    with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected finite values in \[0, 1\]"):
        DIFFUSION.loss(shrink, h.masked_fill(h > 0.5, NAN), None)
    with pytest.raises(KpdiffInputError, match=r"^weights: expected finite values >= 0, got 6"):
        DIFFUSION.loss(shrink, h, None, torch.full((2, 3), NAN))
    with pytest.raises(KpdiffInputError, match=r"^weights: expected values >= 0, got values in"):
        DIFFUSION.loss(shrink, h, None, -torch.ones(2, 3))
    with pytest.raises(KpdiffInputError, match=r"^cond: expected finite values"):
        DIFFUSION.loss(shrink, h, torch.tensor([NAN, 1.0]))
    with pytest.raises(KpdiffInputError, match=r"^cond\[1\]\['f'\]: expected finite values"):
        DIFFUSION.loss(shrink, h, (torch.ones(2), {"f": torch.tensor([INF, 1.0])}))
    with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected \[B, K, H, W\] with all"):
        DIFFUSION.loss(shrink, torch.rand(0, 3, 8, 6), None)
    with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected a floating-point tensor"):
        DIFFUSION.loss(shrink, torch.ones(2, 3, 8, 6, dtype=torch.long), None)
    with pytest.raises(KpdiffInputError, match=r"^t_power: expected a finite number > 0"):
        DIFFUSION.loss(shrink, h, None, t_power=NAN)
    assert torch.isfinite(DIFFUSION.loss(shrink, h, None, torch.ones(2, 3, dtype=torch.bool)))


@pytest.mark.parametrize("eta", [NAN, INF, -1.0, "0"])
def test_sample_refuses_a_bad_eta(eta):
    with pytest.raises(KpdiffInputError, match=r"^eta: expected a finite number >= 0, got"):
        DIFFUSION.sample(shrink, None, (1, 2, 4, 3), eta=eta)
    with pytest.raises(KpdiffInputError, match=r"^eta: expected a finite number >= 0, got"):
        EnsembleSampler(DIFFUSION, GaussianHeatmapCodec((4, 3)), eta=eta)


@pytest.mark.parametrize("steps", [1, 3])
def test_sample_names_a_nan_denoiser_output(steps):
    def broken(x, t, cond):
        return x * NAN

    message = r"^denoiser output: expected finite values, got 24 NaN/inf entries at step 1 of"
    with pytest.raises(KpdiffInputError, match=message):
        DIFFUSION.sample(broken, None, (1, 2, 4, 3), steps=steps)
    sampler = EnsembleSampler(DIFFUSION, GaussianHeatmapCodec((4, 3)), num_samples=2, steps=2)
    with pytest.raises(KpdiffInputError, match=r"^denoiser output: expected finite"):
        sampler(broken, None, (1, 2, 4, 3))
    with pytest.raises(KpdiffInputError, match=r"^renew output: expected finite"):
        DIFFUSION.sample(shrink, None, (1, 2, 4, 3), steps=2, renew=lambda x: x * INF)


def test_sample_names_an_overflowing_start():
    noise = torch.full((1, 2, 4, 3), 3e38)  # step 2: ε̂ = (x_t − √ᾱ·x̂₀)/√(1 − ᾱ) ≈ 6e38
    with pytest.raises(KpdiffInputError, match=r"^noise, denoiser output: the DDIM update"):
        DIFFUSION.sample(lambda x, t, c: torch.full_like(x, -3e38), None, (1, 2, 4, 3), noise=noise)


def test_no_hypotheses_and_bad_sampler_shapes_are_named():
    sampler = EnsembleSampler(DIFFUSION, GaussianHeatmapCodec((4, 3)))
    with pytest.raises(KpdiffInputError, match=r"^hypotheses: expected N >= 1 hypotheses"):
        sampler.aggregate_hypotheses(torch.rand(0, 2, 3, 4, 3))
    with pytest.raises(KpdiffInputError, match=r"^hypotheses: expected finite values"):
        sampler.aggregate_hypotheses(torch.full((2, 2, 3, 4, 3), NAN))
    with pytest.raises(KpdiffInputError, match=r"^num_samples: expected an integer >= 1, got 0"):
        sampler(shrink, None, (1, 2, 4, 3), num_samples=0)
    with pytest.raises(KpdiffInputError, match=r"^shape: expected \(B, K, H, W\), 4 integers"):
        sampler(shrink, None, (1, 2.5, 4, 3))
    with pytest.raises(KpdiffInputError, match=r"^shape: expected \(B, K, H, W\), 4 integers"):
        DIFFUSION.sample(shrink, None, "1243")


@pytest.mark.parametrize("sigma", [NAN, INF, 0.0, -1.0])
def test_codec_refuses_a_bad_sigma(sigma):
    with pytest.raises(KpdiffInputError, match=r"^sigma: expected a finite number > 0, got"):
        GaussianHeatmapCodec(sigma=sigma)
    with pytest.raises(KpdiffInputError, match=r"^sigma: expected a finite number > 0, got"):
        render_heatmaps(torch.rand(1, 2, 2), torch.ones(1, 2), sigma=sigma)


def test_heatmap_size_must_be_integers_integral_floats_accepted():
    kp, vis = torch.rand(1, 2, 2) * 10, torch.ones(1, 2)
    codec = GaussianHeatmapCodec(heatmap_size=(8.0, 6.0))
    assert codec.heatmap_size == (8, 6) and isinstance(codec.heatmap_size[0], int)
    assert codec.encode(kp, vis)[0].shape == (1, 2, 8, 6)
    assert render_heatmaps(kp, vis, heatmap_size=(8.0, 6))[0].shape == (1, 2, 8, 6)
    message = r"^heatmap_size: expected \(H, W\), 2 integers >= 1, got \(8.5, 6\)"
    with pytest.raises(KpdiffInputError, match=message):
        GaussianHeatmapCodec(heatmap_size=(8.5, 6))
    with pytest.raises(KpdiffInputError, match=message):
        render_heatmaps(kp, vis, heatmap_size=(8.5, 6))
    from kpdiff.kernels.reference import render_heatmaps_reference

    with pytest.raises(KpdiffInputError, match=message):
        render_heatmaps_reference(kp, vis, heatmap_size=(8.5, 6))
    with pytest.raises(KpdiffInputError, match=r"^heatmap_size: expected"):
        GaussianHeatmapCodec(heatmap_size=(8, 0))


def test_kernels_name_their_bad_tensors():
    with use_kernels(False):
        with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected finite values"):
            decode_heatmaps(torch.full((1, 1, 3, 3), NAN))
        with pytest.raises(KpdiffInputError, match=r"^heatmaps: expected values with \|x\|"):
            decode_heatmaps(torch.full((1, 1, 3, 3), 1e300, dtype=torch.float64))
        with pytest.raises(KpdiffInputError, match=r"^keypoints: expected finite values"):
            render_heatmaps(torch.full((1, 2, 2), INF), torch.ones(1, 2))
        with pytest.raises(KpdiffInputError, match=r"^x0_hat: expected finite values"):
            ddim_step(torch.zeros(2, 3), torch.full((2, 3), NAN), 0.5, 0.6)
        with pytest.raises(KpdiffInputError, match=r"^x_t: expected a floating-point tensor"):
            ddim_step(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), 0.5, 0.6)
        with pytest.raises(KpdiffInputError, match=r"^x_t, x0_hat: the DDIM update overflows"):
            ddim_step(torch.full((2, 3), 3e38), torch.full((2, 3), -3e38), 0.5, 0.9)
        with pytest.raises(KpdiffInputError, match=r"^feat: expected finite values"):
            lookup_mask(torch.zeros(1, 2, 3, 3), torch.full((1, 4, 3, 3), NAN))


@functools.cache
def tiny() -> DiffPose:
    torch.manual_seed(0)
    return DiffPose(PRESETS["diffpose-tiny"]).eval()


def tiny_clips(b: int = 1, **kwargs: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(b)
    return torch.randn(b, 3, 3, 128, 96, generator=g, **kwargs)


def test_predict_refuses_cond_of_other_clips():
    model = tiny()
    cond = model.condition(tiny_clips(2))
    message = r"^cond: batch size 2 does not match clips' 1"
    with pytest.raises(KpdiffInputError, match=message):
        model.predict(tiny_clips(1), cond=cond, num_samples=1, steps=1)
    p, t = cond.pyramid, cond.terms
    with pytest.raises(KpdiffInputError, match=r"^cond\.pyramid\[0\]: expected shape"):
        model.predict(cond=cond._replace(pyramid=(p[0][:, :3], *p[1:])), num_samples=1, steps=1)
    with pytest.raises(KpdiffInputError, match=r"^cond\.terms\[0\]: expected finite values"):
        model.predict(cond=cond._replace(terms=(t[0] * NAN, *t[1:])), num_samples=1, steps=1)
    # the flat form (cond.tensors(), what the exported graphs take) names positions
    flat = cond.tensors()
    with pytest.raises(KpdiffInputError, match=r"^cond\[2\]: expected finite values"):
        model.predict(cond=(*flat[:2], flat[2] * NAN, *flat[3:]), num_samples=1, steps=1)
    result = model.predict(cond=flat, num_samples=1, steps=1, generator=torch.Generator())
    assert result.keypoints.shape[0] == 2


def test_predict_clip_dtypes():
    """float64 / float16 / bfloat16 clips are cast to the model's dtype; uint8 / bool / integer
    clips are refused (the model expects normalised float images)."""
    model = tiny()
    g = torch.Generator
    ref = model.predict(tiny_clips(), num_samples=1, steps=1, generator=g().manual_seed(0))
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        got = model.predict(
            tiny_clips().to(dtype), num_samples=1, steps=1, generator=g().manual_seed(0)
        )
        assert got.keypoints.shape == ref.keypoints.shape
        assert bool(torch.isfinite(got.heatmaps).all())
    for dtype in (torch.uint8, torch.bool, torch.int64):
        with pytest.raises(KpdiffInputError, match=r"^clips: expected a floating-point tensor of"):
            model.predict(torch.zeros(1, 3, 3, 128, 96, dtype=dtype), num_samples=1, steps=1)
    with pytest.raises(KpdiffInputError, match=r"^clips: expected finite values"):
        model.predict(tiny_clips() * NAN, num_samples=1, steps=1)
    with pytest.raises(KpdiffInputError, match=r"^clips: expected B >= 1 clips"):
        model.predict(tiny_clips()[:0], num_samples=1, steps=1)


# ----------------------------------------------------------------------------- fuzz: diffusion

LOSS_NAMES = {"heatmaps", "weights", "cond", "t_power", "self_align", "generator"}


@FUZZ
@given(
    heatmaps=tensors((2, 3, 4, 3), low=0.0, high=1.0),
    weights=st.one_of(st.none(), tensors((2, 3), low=0.0, high=2.0)),
    cond=st.one_of(st.none(), tensors((2, 5))),
    t_power=number(st.floats(0.5, 3.0)),
    self_align=number(st.floats(0.0, 1.0)),
)
def test_fuzz_loss(heatmaps, weights, cond, t_power, self_align):
    outcome(
        "loss",
        LOSS_NAMES,
        lambda: DIFFUSION.loss(
            shrink,
            heatmaps,
            cond,
            weights,
            t_power=t_power,
            self_align=self_align,
            generator=torch.Generator().manual_seed(0),
        ),
        lambda loss: finite_shaped(loss, ()),
    )


SAMPLE_NAMES = {"shape", "eta", "steps", "noise", "cond", "denoiser output", "generator"}


def shapes(good: tuple[int, ...]) -> st.SearchStrategy[Any]:
    bad = st.one_of(
        st.lists(st.integers(-1, 4), min_size=3, max_size=5).map(tuple),
        st.sampled_from([None, "1234", (1, 2.5, 4, 3), (1.0, 2.0, 4.0, 3.0), 7]),
    )
    return weighted(st.just(good), bad)


def denoisers() -> st.SearchStrategy[Callable[..., Any]]:
    return mostly(
        shrink,
        lambda x, t, c: torch.full_like(x, NAN),
        lambda x, t, c: torch.full_like(x, 1e38),
        lambda x, t, c: x[:, :1],
        lambda x, t, c: x.half(),
        lambda x, t, c: None,
    )


@FUZZ
@given(
    shape=shapes((2, 2, 4, 3)),
    steps=number(st.integers(1, 3)),
    eta=number(st.floats(0.0, 1.0)),
    noise=st.one_of(st.none(), tensors((2, 2, 4, 3), low=-3.0, high=3.0)),
    cond=st.one_of(st.none(), tensors((2, 4))),
    denoiser=denoisers(),
)
def test_fuzz_sample(shape, steps, eta, noise, cond, denoiser):
    def check(x: torch.Tensor) -> None:
        finite_shaped(x, shape)
        assert bool(((x >= 0) & (x <= 1)).all())

    outcome(
        "sample",
        SAMPLE_NAMES,
        lambda: DIFFUSION.sample(
            denoiser,
            cond,
            shape,
            steps=steps,
            eta=eta,
            noise=noise,
            generator=torch.Generator().manual_seed(0),
        ),
        check,
    )


ENSEMBLE_NAMES = SAMPLE_NAMES | {"num_samples", "chunk_size", "aggregate", "hypotheses", "renew"}


@FUZZ
@given(
    num_samples=number(st.integers(1, 3)),
    steps=number(st.integers(1, 2)),
    chunk_size=st.one_of(st.none(), number(st.integers(1, 2))),
    aggregate=st.sampled_from(["mean", "median"] * 3 + ["max", 3]),
    eta=number(st.floats(0.0, 1.0)),
    renew=st.sampled_from([False, True] * 3 + [1]),
    shape=shapes((2, 2, 4, 3)),
    cond=st.one_of(st.none(), tensors((2, 4))),
    denoiser=denoisers(),
    hypotheses=tensors((2, 2, 2, 4, 3), low=-0.5, high=1.5),
)
def test_fuzz_ensemble(
    num_samples, steps, chunk_size, aggregate, eta, renew, shape, cond, denoiser, hypotheses
):
    codec = GaussianHeatmapCodec((4, 3))

    def run() -> Any:
        sampler = EnsembleSampler(
            DIFFUSION, codec, num_samples=num_samples, steps=steps, chunk_size=chunk_size,
            aggregate=aggregate, eta=eta, renew=renew,
        )  # fmt: skip
        return sampler, sampler(denoiser, cond, shape, generator=torch.Generator().manual_seed(0))

    def check(out: Any) -> None:
        sampler, result = out
        b, k = shape[:2]
        finite_shaped(result.heatmaps, shape)
        finite_shaped(result.keypoints, (b, k, 2))
        finite_shaped(result.scores, (b, k))
        finite_shaped(result.spread, (b, k))
        finite_shaped(result.hypothesis_keypoints, (sampler.num_samples, b, k, 2))

    outcome("ensemble", ENSEMBLE_NAMES, run, check)
    sampler = EnsembleSampler(DIFFUSION, codec, aggregate="median" if renew else "mean")

    def check_aggregate(result: Any) -> None:
        b, k = hypotheses.shape[1:3]
        finite_shaped(result.heatmaps, (b, k, 4, 3))
        finite_shaped(result.keypoints, (b, k, 2))
        finite_shaped(result.spread, (b, k))

    outcome(
        "aggregate_hypotheses",
        {"hypotheses"},
        lambda: sampler.aggregate_hypotheses(hypotheses),
        check_aggregate,
    )


# -------------------------------------------------------------------------------- fuzz: codec

CODEC_NAMES = {"heatmap_size", "stride", "sigma", "refine", "dark_kernel"}
SIZES = st.one_of(
    st.tuples(st.integers(1, 6), st.integers(1, 6)),
    st.sampled_from([(4.0, 3.0), (4.5, 3), (0, 3), (4,), (4, 3, 2), "43", None, (True, 3)]),
)


@FUZZ
@given(
    size=weighted(st.just((5, 4)), SIZES),
    stride=number(st.floats(0.5, 8.0)),
    sigma=number(st.floats(0.3, 4.0)),
    refine=st.sampled_from(["quarter", "dark", "none"] * 4 + ["QUARTER", None]),
    dark_kernel=st.one_of(st.sampled_from([3, 11, 1]), mostly(5, 4, 0, 3.0, "3", True)),
    keypoints=tensors((2, 3, 2), low=-10.0, high=30.0),
    visibility=tensors((2, 3), low=-1.0, high=1.0),
    heatmaps=tensors((2, 3, 5, 4), low=-0.5, high=1.5),
)
def test_fuzz_codec(size, stride, sigma, refine, dark_kernel, keypoints, visibility, heatmaps):
    holder: dict[str, GaussianHeatmapCodec] = {}

    def build() -> GaussianHeatmapCodec:
        holder["codec"] = GaussianHeatmapCodec(size, stride, sigma, refine, dark_kernel)
        return holder["codec"]

    outcome("codec", CODEC_NAMES, build, lambda c: None)
    codec = holder.get("codec", GaussianHeatmapCodec((5, 4), refine="dark"))
    h, w = codec.heatmap_size

    def check_encode(out: Any) -> None:
        b, k = keypoints.shape[:2]
        finite_shaped(out[0], (b, k, h, w))
        finite_shaped(out[1], (b, k))

    outcome(
        "codec.encode",
        {"keypoints", "visibility"},
        lambda: codec.encode(keypoints, visibility),
        check_encode,
    )

    def check_decode(out: Any) -> None:
        b, k = heatmaps.shape[:2]
        finite_shaped(out[0], (b, k, 2))
        finite_shaped(out[1], (b, k))

    outcome("codec.decode", {"heatmaps"}, lambda: codec.decode(heatmaps), check_decode)


# ------------------------------------------------------------------------------ fuzz: kernels

KERNEL_NAMES = {"keypoints", "visibility", "heatmap_size", "stride", "sigma", "heatmaps"}
KERNEL_NAMES |= {"refine", "x_t", "x0_hat", "noise", "eta", "clip_range", "alpha_t"}
KERNEL_NAMES |= {"alpha_prev", "generator", "xbar", "feat"}


@FUZZ
@given(
    keypoints=tensors((2, 3, 2), low=-10.0, high=30.0),
    visibility=tensors((2, 3), low=-1.0, high=1.0),
    size=weighted(st.just((5, 4)), SIZES),
    stride=number(st.floats(0.5, 8.0)),
    sigma=number(st.floats(0.3, 4.0)),
    heatmaps=tensors((2, 3, 5, 4), low=-0.5, high=1.5),
    refine=st.sampled_from(["quarter", "none", "dark", 0]),
)
def test_fuzz_render_and_decode(keypoints, visibility, size, stride, sigma, heatmaps, refine):
    def check_render(out: Any) -> None:
        b, k = keypoints.shape[:2]
        finite_shaped(out[0], (b, k, *out[0].shape[2:]))
        assert tuple(out[0].shape[2:]) == tuple(int(s) for s in size)
        finite_shaped(out[1], (b, k))

    def check_decode(out: Any) -> None:
        b, k = heatmaps.shape[:2]
        finite_shaped(out[0], (b, k, 2))
        finite_shaped(out[1], (b, k))

    with use_kernels(False):
        outcome(
            "render_heatmaps",
            KERNEL_NAMES,
            lambda: render_heatmaps(
                keypoints, visibility, heatmap_size=size, stride=stride, sigma=sigma
            ),
            check_render,
        )
        outcome(
            "decode_heatmaps",
            KERNEL_NAMES,
            lambda: decode_heatmaps(heatmaps, stride=stride, refine=refine),
            check_decode,
        )


@FUZZ
@given(
    x_t=tensors((3, 2, 4), low=-3.0, high=3.0),
    x0_hat=tensors((3, 2, 4), low=-3.0, high=3.0),
    alphas=st.one_of(
        st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 1.0)).map(
            lambda a: (min(a), max(max(a), 1e-3))
        ),
        st.tuples(NUMBERS, NUMBERS),
    ),
    eta=number(st.floats(0.0, 1.0)),
    clip_range=st.one_of(st.none(), number(st.floats(0.5, 3.0))),
    noise=st.one_of(st.none(), tensors((3, 2, 4), low=-3.0, high=3.0)),
    xbar=tensors((2, 3, 4, 3)),
    feat=tensors((2, 5, 4, 3)),
)
def test_fuzz_ddim_and_lookup(x_t, x0_hat, alphas, eta, clip_range, noise, xbar, feat):
    def run_ddim() -> Any:
        return ddim_step(
            x_t, x0_hat, *alphas, eta=eta, clip_range=clip_range, noise=noise,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip

    def check_lookup(concat: bool) -> Callable[[Any], None]:
        def check(out: Any) -> None:
            c = feat.shape[1] * (2 if concat else 1)
            finite_shaped(out, (xbar.shape[0], c, *xbar.shape[2:]))

        return check

    with use_kernels(False):
        outcome("ddim_step", KERNEL_NAMES, run_ddim, lambda out: finite_shaped(out, x_t.shape))
        outcome(
            "lookup_concat", KERNEL_NAMES, lambda: lookup_concat(xbar, feat), check_lookup(True)
        )
        outcome("lookup_mask", KERNEL_NAMES, lambda: lookup_mask(xbar, feat), check_lookup(False))


# ----------------------------------------------------------------------------- fuzz: DiffPose

PREDICT_NAMES = {"clips", "cond", "num_samples", "steps", "generator", "predict"}


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))  # a model per example: half as many
@given(
    clips=tensors((1, 3, 3, 128, 96), low=-2.0, high=2.0),
    cond_batch=st.sampled_from([None] * 5 + [1, 2, "junk"]),
    num_samples=number(st.integers(1, 2)),
    steps=number(st.just(1)),
)
def test_fuzz_predict(clips, cond_batch, num_samples, steps):
    model = tiny()
    if cond_batch is None:
        cond = None
    elif cond_batch == "junk":
        cond = (torch.zeros(1, 3),)
    else:
        cond = model.condition(tiny_clips(cond_batch))

    def check(result: Any) -> None:
        b = cond.batch_size if cond is not None else clips.shape[0]
        k, (h, w) = model.config.num_keypoints, model.config.heatmap_size
        finite_shaped(result.keypoints, (b, k, 2))
        finite_shaped(result.scores, (b, k))
        finite_shaped(result.spread, (b, k))
        finite_shaped(result.heatmaps, (b, k, h, w))

    outcome(
        "predict",
        PREDICT_NAMES,
        lambda: model.predict(
            clips,
            cond=cond,
            num_samples=num_samples,
            steps=steps,
            generator=torch.Generator().manual_seed(0),
        ),
        check,
    )


def test_every_property_tried_inputs():
    """Runs last in this file: each fuzzed entry point saw inputs (counts in ``TRIED``)."""
    if not TRIED:
        pytest.skip("run together with the fuzz tests")
    props = {p for p in TRIED if ":" not in p}
    assert len(props) == 13, sorted(props)
    for prop in props:  # both outcomes happen, or the property tests little
        assert TRIED[f"{prop}:ok"] > 0 and TRIED[f"{prop}:error"] > 0, (prop, dict(TRIED))
    assert math.fsum(TRIED[p] for p in props) >= 300
