"""The reader of ``sampler.json``, the sidecar that :func:`kpdiff.export.export_onnx` writes.

:func:`read_sidecar` parses it and checks every field :class:`~kpdiff.onnx_sampler.OnnxPoseSampler`
reads (format and version, sizes, codec, sampling, the DDIM scheduler's ᾱ table, graph files,
condition shapes), with one-line errors naming the file. It imports numpy and kpdiff.errors only:
it runs where torch is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kpdiff.errors import KpdiffInputError, check_int, check_number

__all__ = ["SIDECAR_FILE", "SIDECAR_FORMAT", "SIDECAR_VERSION", "read_sidecar"]

# the sidecar that kpdiff.export writes beside the graphs (this module is its reader: torch-free)
SIDECAR_FILE, SIDECAR_FORMAT, SIDECAR_VERSION = "sampler.json", "kpdiff-sampler", 1


def read_sidecar(path: Path) -> dict[str, Any]:
    """``sampler.json`` parsed and its fields checked; one-line errors naming the file."""
    if not path.is_file():
        raise KpdiffInputError(
            f"{path}: not found; expected a folder written by kpdiff export (a complete export "
            f"holds encoder.onnx, decoder_step.onnx and sampler.json)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        detail = " ".join(str(err).split())[:160]
        raise KpdiffInputError(f"{path}: not valid JSON ({detail})") from None
    if not isinstance(info, dict) or info.get("sidecar") != SIDECAR_FORMAT:
        raise KpdiffInputError(
            f"{path}: not a kpdiff sampler.json (no 'sidecar': 'kpdiff-sampler')"
        )
    version = info.get("format_version")
    if version != SIDECAR_VERSION:
        raise KpdiffInputError(
            f"{path}: format_version {version!r}; this kpdiff reads version {SIDECAR_VERSION} "
            f"(export the model again with this kpdiff)"
        )
    if info.get("format") != "onnx":
        raise KpdiffInputError(
            f"{path}: an export of format {info.get('format')!r}; OnnxPoseSampler reads "
            f"--format onnx exports"
        )
    try:
        _check_fields(info)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        if isinstance(err, KpdiffInputError):
            raise KpdiffInputError(f"{path}: {err}") from None
        raise KpdiffInputError(f"{path}: a missing or malformed field ({err!r:.120})") from None
    return info


def _check_fields(info: dict[str, Any]) -> None:
    def sizes(name: str, n: int) -> None:
        value = info[name]
        if not (isinstance(value, list) and len(value) == n) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in value
        ):
            raise KpdiffInputError(f"{name}: expected {n} integers >= 1, got {value!r:.80}")

    check_int("num_keypoints", info["num_keypoints"])
    check_int("num_frames", info["num_frames"])
    sizes("input_size", 2)
    sizes("heatmap_size", 2)
    check_number("stride", info["stride"], low=0.0, low_open=True)
    check_number("signal_scale", info["signal_scale"], low=0.0, low_open=True)
    codec, sampling, sched = info["codec"], info["sampling"], info["scheduler"]
    if codec["refine"] not in ("none", "quarter", "dark"):
        raise KpdiffInputError(f"codec.refine: expected 'none', 'quarter' or 'dark', got "
                               f"{codec['refine']!r:.60}")  # fmt: skip
    check_number("codec.sigma", codec["sigma"], low=0.0, low_open=True)
    check_int("codec.dark_kernel", codec["dark_kernel"])
    check_int("sampling.num_samples", sampling["num_samples"])
    check_int("sampling.steps", sampling["steps"])
    check_number("sampling.eta", sampling["eta"], low=0.0)
    if not isinstance(sampling["renew"], bool) or sampling.get("aggregate", "mean") != "mean":
        raise KpdiffInputError("sampling: expected renew true/false and aggregate 'mean'")
    if sched.get("type") != "DDIM" or sched.get("timestep_spacing") != "trailing":
        raise KpdiffInputError(
            f"scheduler: expected DDIM with 'trailing' spacing, got {sched.get('type')!r} with "
            f"{sched.get('timestep_spacing')!r}"
        )
    T = check_int("scheduler.num_train_timesteps", sched["num_train_timesteps"])
    abar = sched["alphas_cumprod"]
    if not isinstance(abar, list) or len(abar) != T:
        raise KpdiffInputError(f"scheduler.alphas_cumprod: expected {T} numbers")
    values = np.asarray(abar, dtype=np.float64)
    if not (np.isfinite(values).all() and (values > 0).all() and (values < 1).all()):
        raise KpdiffInputError("scheduler.alphas_cumprod: expected numbers in (0, 1)")
    if sched["clip_sample"]:
        check_number("scheduler.clip_sample_range", sched["clip_sample_range"], low=0.0,
                     low_open=True)  # fmt: skip
    for graph in ("encoder", "decoder_step"):
        spec = info["graphs"][graph]
        if not isinstance(spec["file"], str) or Path(spec["file"]).name != spec["file"]:
            raise KpdiffInputError(f"graphs.{graph}.file: expected a file name, got "
                                   f"{spec['file']!r:.80}")  # fmt: skip
    for c in info["cond"]:
        if not isinstance(c["name"], str) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in c["shape"]
        ):
            raise KpdiffInputError(f"cond: expected names and sizes, got {c!r:.80}")
