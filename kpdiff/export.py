"""Export DiffPose as two graphs and a sidecar, for a sampler that needs no torch.

    clips [B, T, 3, H, W] ──encoder graph──► cond = (𝔽¹ … 𝔽ⁿ, T¹ … Tⁿ)   once per clip
    x_t [M, K, h, w], t [M], cond [M, …] ──decoder-step graph──► x̂₀ [M, K, h, w]   M = N·B

The encoder graph is ``DiffPose.condition`` (the encoder and the decoder's step-invariant
``prepare``); the decoder-step graph is one call of ``PoseDecoder.forward``. Both have a dynamic
batch axis. Everything around them (the N × steps loop, the DDIM update, the mean over
hypotheses, the heatmap decode) is plain arithmetic that :class:`kpdiff.onnx_sampler.
OnnxPoseSampler` reproduces in numpy from ``sampler.json``: the keypoint count, sizes, signal
range, the scheduler's ᾱ table and timestep rule, the codec settings and the kpdiff version.

    from kpdiff import DiffPose
    from kpdiff.export import export_onnx

    export_onnx(DiffPose.from_pretrained("run/best"), "exported/")
    # exported/encoder.onnx, exported/decoder_step.onnx, exported/sampler.json

The graphs are traced with ``torch.export`` (non-strict) and translated by torch's dynamo-based
ONNX exporter (it needs ``onnxscript``); the Triton kernels are switched off while tracing, so the
graphs hold the torch reference ops. ``export_torch`` writes the same two programs as
``torch.export`` ``.pt2`` files instead.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from kpdiff.errors import KpdiffError, KpdiffInputError, check_int
from kpdiff.io import atomic_path, write_text_atomic
from kpdiff.onnx_sampler import SIDECAR_FILE, SIDECAR_FORMAT, SIDECAR_VERSION

if TYPE_CHECKING:
    from kpdiff.diffpose import DiffPose

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "SIDECAR_FILE",
    "SIDECAR_FORMAT",
    "ExportReport",
    "export_onnx",
    "export_torch",
]

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder_step.onnx"
_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1: trace with 2, any B ≥ 1 runs
_MAX_PROTO_BYTES = 2**31 - 2**24  # one ONNX file (protobuf) holds < 2 GiB, keep a margin


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` / :func:`export_torch` wrote.

    Attributes:
        directory: the output folder.
        files: the files written, the sidecar last.
        max_abs_error: the largest absolute difference, per graph (``"encoder"``,
            ``"decoder_step"``), between the exported graph and torch eager on the example
            inputs (B = 2 for the encoder, 2 clips × 2 hypotheses for the decoder step); empty
            when ``check=False``.
    """

    directory: Path
    files: tuple[Path, ...]
    max_abs_error: dict[str, float] = field(default_factory=dict)


class _EncoderGraph(nn.Module):
    """``clips [B, T, 3, H, W] → cond``: DiffPose.condition without its eager-only checks."""

    def __init__(self, model: DiffPose) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.decoder.prepare(self.model.encoder(clips)).tensors()


class _DecoderStepGraph(nn.Module):
    """``x_t [M, K, h, w], t [M], *cond → x̂₀ [M, K, h, w]``: one PoseDecoder evaluation."""

    def __init__(self, model: DiffPose) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(x_t, t, cond)


def cond_names(model: DiffPose) -> list[str]:
    """The names of the condition's tensors, the encoder graph's outputs: ``pyramid_x{f}`` (𝔽ʲ,
    𝔽 up-sampled ×f) then ``feature_term_x{f}`` (Tʲ, its share of scale j's fusion)."""
    factors = model.decoder.factors
    return [f"pyramid_x{f}" for f in factors] + [f"feature_term_x{f}" for f in factors]


def export_onnx(
    model: DiffPose,
    directory: str | Path,
    *,
    opset: int = 18,
    check: bool = True,
) -> ExportReport:
    """Write ``encoder.onnx``, ``decoder_step.onnx`` and ``sampler.json`` into ``directory``.

    The sidecar is removed first and written last, so a folder holding ``sampler.json`` holds a
    complete export; each file is written atomically. Both graphs carry the keypoint count and an
    export id in their metadata, which :class:`~kpdiff.onnx_sampler.OnnxPoseSampler` compares with
    the sidecar's.

    Args:
        model: a :class:`~kpdiff.DiffPose` (any device or dtype: a float32 CPU copy is exported,
            the model itself is left as it was).
        directory: the output folder (created).
        opset: the ONNX opset, ≥ 17. Default ``18``.
        check: run both graphs in onnxruntime on the example inputs and compare with torch eager
            (raises :class:`~kpdiff.errors.KpdiffError` beyond ``1e-3 · max(1, max |x|)``).
            Default ``True``.

    Shapes:
        ``encoder.onnx``: ``clips [B, T, 3, H, W]`` → the condition tensors (see
        :func:`cond_names`), e.g. ``pyramid_x1 [B, 128, H/16, W/16]`` …;
        ``decoder_step.onnx``: ``x_t [M, K, H/4, W/4]`` (float32), ``t [M]`` (int64) and the
        condition tensors repeated to ``M`` → ``x0_hat [M, K, H/4, W/4]`` (signal units).

    Returns:
        An :class:`ExportReport`.

    Raises:
        KpdiffInputError: ``model`` is not a DiffPose, its sampler cannot be reproduced by the
            numpy sampler (see :func:`sidecar`), ``opset`` < 17, a graph over 2 GiB, or an
            output folder that cannot be one.
    """
    opset = check_int("opset", opset, low=17)
    return _export(model, directory, fmt="onnx", opset=opset, check=check)


def export_torch(model: DiffPose, directory: str | Path, *, check: bool = True) -> ExportReport:
    """Write the same two graphs as ``torch.export`` programs: ``encoder.pt2``,
    ``decoder_step.pt2`` and ``sampler.json`` (load them with ``torch.export.load``; the numpy
    sampler reads ONNX only). Arguments, shapes and errors as :func:`export_onnx`."""
    return _export(model, directory, fmt="torch-export", opset=None, check=check)


def _export(
    model: DiffPose,
    directory: str | Path,
    *,
    fmt: Literal["onnx", "torch-export"],
    opset: int | None,
    check: bool,
) -> ExportReport:
    from kpdiff.diffpose import DiffPose

    if not isinstance(model, DiffPose):
        raise KpdiffInputError(f"model: expected a DiffPose, got {type(model).__name__}")
    info = sidecar(model)  # refuses what the numpy sampler cannot reproduce, before any work
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise KpdiffInputError(f"directory: {directory} exists and is not a folder")
    nbytes = sum(p.numel() * 4 for p in model.parameters())
    if fmt == "onnx" and nbytes > _MAX_PROTO_BYTES:
        raise KpdiffInputError(
            f"model: {nbytes / 2**30:.1f} GiB of float32 weights; an ONNX graph file holds less "
            f"than 2 GiB (export a smaller backbone, or use --format torch-export)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SIDECAR_FILE).unlink(missing_ok=True)  # the folder is incomplete until the end

    names = cond_names(model)
    export_id = secrets.token_hex(8)
    info["export_id"] = export_id
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    files = {"encoder": ENCODER_FILE.replace(".onnx", suffix)}
    files["decoder_step"] = DECODER_FILE.replace(".onnx", suffix)
    errors: dict[str, float] = {}
    with _float32_cpu_eval(model) as m, torch.no_grad():
        c = m.config
        gen = torch.Generator().manual_seed(0)
        clips = torch.randn(_EXAMPLE_BATCH, 2 * c.delta + 1, 3, *c.input_size, generator=gen)
        cond = m.condition(clips).tensors()  # the graphs take the flat form
        m_batch = 2 * _EXAMPLE_BATCH  # two hypotheses of each clip
        x_t = torch.randn(m_batch, c.num_keypoints, *c.heatmap_size, generator=gen)
        t = torch.tensor([c.num_train_timesteps - 1, c.num_train_timesteps // 2] * _EXAMPLE_BATCH)
        cond_m = tuple(x.repeat(2, 1, 1, 1) for x in cond)
        x0_hat = m.decoder(x_t, t, cond_m)
        batch = torch.export.Dim("batch", min=1)
        graphs = {
            "encoder": (
                _EncoderGraph(m).eval(), (clips,), ({0: batch},), ["clips"], names, list(cond)
            ),
            "decoder_step": (
                _DecoderStepGraph(m).eval(), (x_t, t, *cond_m),
                ({0: batch}, {0: batch}, tuple({0: batch} for _ in cond_m)),
                ["x_t", "t", *names], ["x0_hat"], [x0_hat],
            ),
        }  # fmt: skip
        written = []
        for graph, (module, args, dynamic, inputs, outputs, expected) in graphs.items():
            program = _trace(module, args, dynamic, graph)
            path = directory / files[graph]
            if fmt == "onnx":
                meta = {"kpdiff.graph": graph, "kpdiff.export_id": export_id,
                        "kpdiff.num_keypoints": str(c.num_keypoints),
                        "kpdiff.version": info["kpdiff_version"]}  # fmt: skip
                _save_onnx(program, path, inputs, outputs, opset, meta)
                if check:
                    feeds = [a.numpy() for a in args]
                    errors[graph] = _check_onnx(path, graph, dict(zip(inputs, feeds, strict=True)),
                                                expected)  # fmt: skip
            else:
                with atomic_path(path) as tmp:
                    torch.export.save(program, tmp)
                if check:
                    errors[graph] = _check_torch(path, graph, args, expected)
            written.append(path)
            info["graphs"][graph] = {"file": files[graph], "inputs": inputs, "outputs": outputs}
    info["format"] = fmt
    info["opset"] = opset
    info["cond"] = [
        {"name": n, "shape": list(x.shape[1:])} for n, x in zip(names, cond, strict=True)
    ]
    info["export_check"] = {"max_abs_error": errors}
    written.append(write_text_atomic(directory / SIDECAR_FILE, json.dumps(info, indent=1)))
    return ExportReport(directory, tuple(written), errors)


def sidecar(model: DiffPose) -> dict[str, Any]:
    """The model's ``sampler.json`` content, without the fields that depend on the export.

    Holds what a torch-free sampler needs to reproduce :meth:`DiffPose.predict`: sizes and the
    signal range, the DDIM scheduler's ᾱ table (float32 values, as ``HeatmapDiffusion`` keeps
    them) and its timestep rule, the sampling defaults, the codec settings, and the full config.

    Raises:
        KpdiffInputError: a scheduler that is not DDIM with x₀-prediction, ``"trailing"``
            spacing and no thresholding (what :func:`~kpdiff.default_scheduler` builds), or an
            aggregation other than the mean: the numpy sampler implements only those.
    """
    from diffusers import DDIMScheduler

    from kpdiff import __version__

    c, diffusion, sampler, codec = model.config, model.diffusion, model.sampler, model.codec
    template = diffusion.new_scheduler()
    sc = template.config
    problems = []
    if not isinstance(template, DDIMScheduler):
        problems.append(f"scheduler {type(template).__name__} (expected DDIMScheduler)")
    else:
        if sc.timestep_spacing != "trailing":
            problems.append(f"timestep_spacing={sc.timestep_spacing!r} (expected 'trailing')")
        if sc.get("thresholding", False):
            problems.append("thresholding=True (expected False)")
    if sampler.aggregate != "mean":
        problems.append(f"aggregate={sampler.aggregate!r} (expected 'mean')")
    if problems:
        raise KpdiffInputError(
            f"model: the numpy sampler reproduces DiffPose's default sampling only; this model "
            f"has {', '.join(problems)}"
        )
    abar = diffusion.alphas_cumprod.detach().cpu().to(torch.float32).numpy()
    return {
        "format": None,
        "format_version": SIDECAR_VERSION,
        "sidecar": SIDECAR_FORMAT,
        "kpdiff_version": __version__,
        "schema": c.schema,
        "num_keypoints": c.num_keypoints,
        "num_frames": 2 * c.delta + 1,
        "input_size": list(c.input_size),
        "heatmap_size": list(codec.heatmap_size),
        "stride": float(codec.stride),
        "signal_scale": float(diffusion.signal.scale),
        "codec": {
            "sigma": float(codec.sigma),
            "refine": codec.refine,
            "dark_kernel": int(codec.dark_kernel),
        },
        "sampling": {
            "num_samples": sampler.num_samples,
            "steps": sampler.steps,
            "eta": float(sampler.eta),
            "renew": bool(sampler.renew),
            "aggregate": sampler.aggregate,
        },
        "scheduler": {
            "type": "DDIM",
            "num_train_timesteps": int(sc.num_train_timesteps),
            "timestep_spacing": "trailing",
            "prediction_type": "sample",
            "clip_sample": bool(sc.clip_sample),
            "clip_sample_range": float(sc.clip_sample_range),
            # float32 values written as the float64 numbers they are: exact in JSON
            "alphas_cumprod": [float(a) for a in abar.astype(np.float64)],
        },
        "graphs": {},
        "config": c.to_dict(),
    }


@contextmanager
def _float32_cpu_eval(model: DiffPose) -> Iterator[DiffPose]:
    """The model as a float32 CPU module in eval mode, kernels off; a copy when it is not one
    already (the caller's model keeps its device, dtype and mode)."""
    from kpdiff.kernels import use_kernels

    params = list(model.parameters())
    as_is = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    m = model if as_is else copy.deepcopy(model).to("cpu", torch.float32)
    was_training = m.training
    m.eval()
    try:
        with use_kernels(False):
            yield m
    finally:
        if as_is:
            m.train(was_training)


def _trace(module: nn.Module, args: tuple, dynamic: tuple, graph: str) -> Any:
    """``torch.export.export`` (non-strict) with a dynamic batch; a graph whose batch got
    specialised is an error here rather than a silently static ONNX file."""
    try:
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
    except Exception as err:  # torch's UserError / constraint violations and friends
        detail = " ".join(str(err).split())[:400]
        raise KpdiffError(f"export: torch.export cannot trace the {graph} graph: {detail}") from err


def _save_onnx(
    program: Any,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    opset: int | None,
    meta: dict[str, str],
) -> None:
    try:
        onnx_program = torch.onnx.export(
            program, input_names=inputs, output_names=outputs, opset_version=opset,
            dynamo=True, verbose=False, optimize=True,
        )  # fmt: skip
    except ImportError as err:  # onnxscript / onnx missing
        raise KpdiffInputError(
            f"export: ONNX export needs onnx and onnxscript ({err}); pip install 'kpdiff[export]'"
        ) from None
    onnx_program.model.metadata_props.update(meta)
    with atomic_path(path) as tmp:
        onnx_program.save(tmp, external_data=False)


def _check_onnx(
    path: Path, graph: str, feeds: dict[str, np.ndarray], expected: list[torch.Tensor]
) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    return _compare(graph, got, [e.numpy() for e in expected], "onnxruntime")


def _check_torch(path: Path, graph: str, args: tuple, expected: list[torch.Tensor]) -> float:
    out = torch.export.load(path).module()(*args)
    got = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
    return _compare(graph, got, [e.numpy() for e in expected], "the exported program")


def _compare(graph: str, got: list[np.ndarray], want: list[np.ndarray], what: str) -> float:
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            raise KpdiffError(
                f"export: {graph} output {i} has shape {g.shape} in {what}, {w.shape}"
            )
        err = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
        if not err <= 1e-3 * max(1.0, float(np.abs(w).max())):
            raise KpdiffError(
                f"export: the {graph} graph differs from torch eager in {what} by {err:.3g} on "
                f"output {i}; the export is wrong (please report it)"
            )
        worst = max(worst, err)
    return worst
