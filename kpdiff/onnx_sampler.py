"""OnnxPoseSampler: DiffPose.predict with numpy and onnxruntime only (no torch at inference).

Reads the folder that :func:`kpdiff.export.export_onnx` (or ``kpdiff export CKPT --format
onnx``) writes and runs the same computation as :meth:`kpdiff.DiffPose.predict`:

    cond  = encoder.onnx(clips)                                     once per clip
    x_T   = noise [N·B, K, h, w] (hypothesis-major: index i·B + b)
    for t, t_prev in the DDIM timesteps ("trailing" spacing, T / steps apart):
        x̂₀ = decoder_step.onnx(x_t, t, cond repeated N times)
        ε̂  = (x_t − √ᾱ_t · x̂₀) / √(1 − ᾱ_t)
        x_prev = √ᾱ_prev · clip(x̂₀) + √(1 − ᾱ_prev − σ²) · ε̂ + σ · z   (DDIM eq. 12)
    heatmaps = mean over N of (clip(last x̂₀) / scale + 1) / 2
    keypoints, scores = argmax + quarter pixel (or DARK) of the mean heatmaps

The ᾱ table, the sizes, the signal range and the codec settings come from ``sampler.json``.
This module imports numpy, onnxruntime and kpdiff.errors only (the numpy arithmetic is in
:mod:`kpdiff.onnx_numpy`, the ``sampler.json`` reader in :mod:`kpdiff.onnx_sidecar`, which
import no more): it runs where torch is not installed. With the same noise it gives
DiffPose.predict's keypoints to float32 rounding (the export parity test bounds the difference
at 0.05 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpdiff.errors import CLIP_MAX_ABS, KpdiffInputError, check_int
from kpdiff.onnx_numpy import ddim_step, ddim_timesteps, decode_heatmaps, render_heatmaps
from kpdiff.onnx_sidecar import SIDECAR_FILE, SIDECAR_FORMAT, SIDECAR_VERSION, read_sidecar

__all__ = [
    "SIDECAR_FILE",
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "OnnxPoseResult",
    "OnnxPoseSampler",
    "ddim_step",
    "ddim_timesteps",
    "decode_heatmaps",
    "render_heatmaps",
]


@dataclass
class OnnxPoseResult:
    """What :meth:`OnnxPoseSampler.predict` returns (the fields of ``EnsembleResult`` that a
    deployment reads), numpy float32.

    Attributes:
        keypoints: ``[B, K, 2]`` ``(x, y)`` in crop (input) pixels, as ``DiffPose.predict``.
        scores: ``[B, K]``, the maxima of the mean heatmaps.
        spread: ``[B, K]`` crop pixels, the root mean square distance of the N hypotheses'
            keypoints to their mean.
        heatmaps: ``[B, K, H/4, W/4]``, the mean of the N hypotheses (heatmap units ``[0, 1]``).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    spread: np.ndarray
    heatmaps: np.ndarray


class OnnxPoseSampler:
    """DiffPose's ensemble sampler on an exported folder, in numpy and onnxruntime.

    Args:
        directory: a folder written by :func:`kpdiff.export.export_onnx`: ``sampler.json``,
            ``encoder.onnx``, ``decoder_step.onnx``.
        num_keypoints: the keypoint count the caller expects (e.g. its schema's); a folder for
            another count is refused. Default ``None`` (any).
        threads: onnxruntime intra-op threads. Default ``None`` (onnxruntime's default: the
            physical cores).
        providers: onnxruntime execution providers. Default ``["CPUExecutionProvider"]``.

    Attributes:
        info: the parsed ``sampler.json``.
        num_keypoints, num_frames, input_size, heatmap_size: the model's K, T = 2δ+1, ``(H, W)``
            and ``(H/4, W/4)``.

    Raises:
        KpdiffInputError: one line naming the file: a folder that is not a complete export, a
            sidecar of another format or version, an ONNX file onnxruntime cannot load, or a
            graph of another keypoint count, size or export than ``sampler.json`` describes.

    Example:
        >>> sampler = OnnxPoseSampler("exported/")
        >>> result = sampler.predict(clips)  # clips [B, T, 3, H, W] float32, normalised
        >>> result.keypoints, result.scores  # [B, K, 2] crop pixels, [B, K]
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        num_keypoints: int | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise KpdiffInputError(
                f"directory: {directory} is not a folder; expected the output of kpdiff export"
            )
        self.directory = directory
        self.info = info = read_sidecar(directory / SIDECAR_FILE)
        self.num_keypoints = int(info["num_keypoints"])
        self.num_frames = int(info["num_frames"])
        self.input_size = tuple(int(s) for s in info["input_size"])
        self.heatmap_size = tuple(int(s) for s in info["heatmap_size"])
        if num_keypoints is not None:
            num_keypoints = check_int("num_keypoints", num_keypoints, low=1)
            if num_keypoints != self.num_keypoints:
                raise KpdiffInputError(
                    f"num_keypoints: {directory} is a model of {self.num_keypoints} keypoints, "
                    f"expected {num_keypoints}"
                )
        sched = info["scheduler"]
        self._abar = np.asarray(sched["alphas_cumprod"], dtype=np.float64)
        self._T = int(sched["num_train_timesteps"])
        self._clip = float(sched["clip_sample_range"]) if sched["clip_sample"] else None
        self._scale = float(info["signal_scale"])
        self._stride = float(info["stride"])
        self._codec = info["codec"]
        self._sampling = info["sampling"]
        self._cond_names = [c["name"] for c in info["cond"]]
        if threads is not None:
            threads = check_int("threads", threads, low=1)
        self._encoder = self._session("encoder", threads, providers)
        self._decoder = self._session("decoder_step", threads, providers)

    def __repr__(self) -> str:
        return (
            f"OnnxPoseSampler({str(self.directory)!r}, K={self.num_keypoints}, "
            f"input_size={self.input_size}, T={self.num_frames})"
        )

    # ----------------------------------------------------------------------------- loading

    def _session(self, graph: str, threads: int | None, providers: list[str] | None) -> Any:
        """An onnxruntime session of one graph, checked against the sidecar."""
        import onnxruntime as ort

        spec = self.info["graphs"][graph]
        path = self.directory / spec["file"]
        if not path.is_file():
            raise KpdiffInputError(
                f"{path}: not found; {self.directory / SIDECAR_FILE} lists it (an incomplete "
                f"copy of the export?)"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Fail / InvalidProtobuf / …
            detail = " ".join(str(err).split())[:200]
            raise KpdiffInputError(
                f"{path}: not an ONNX model onnxruntime can load ({detail})"
            ) from None
        meta = session.get_modelmeta().custom_metadata_map
        k_meta = meta.get("kpdiff.num_keypoints")
        if k_meta is not None and k_meta != str(self.num_keypoints):
            raise self._other_k(path, k_meta)
        if meta.get("kpdiff.graph", graph) != graph:
            raise KpdiffInputError(
                f"{path}: holds the {meta['kpdiff.graph']} graph, expected the {graph} graph"
            )
        got_in = [(i.name, i.shape) for i in session.get_inputs()]
        got_out = [(o.name, o.shape) for o in session.get_outputs()]
        want_in, want_out = self._graph_shapes(graph)
        for where, got, want in (("inputs", got_in, want_in), ("outputs", got_out, want_out)):
            if [n for n, _ in got] != [n for n, _ in want]:
                raise KpdiffInputError(
                    f"{path}: {where} {[n for n, _ in got]}, expected {[n for n, _ in want]} "
                    f"(not a kpdiff {graph} graph for this sampler.json)"
                )
            for (name, shape), (_, expected) in zip(got, want, strict=True):
                fixed = [s if isinstance(s, int) else None for s in shape]
                if len(fixed) != len(expected) or any(
                    e is not None and s != e for s, e in zip(fixed, expected, strict=False)
                ):
                    k = fixed[1] if name in ("x_t", "x0_hat") and len(fixed) == 4 else None
                    if k is not None and k != self.num_keypoints:
                        raise self._other_k(path, str(k))
                    raise KpdiffInputError(
                        f"{path}: {name} has shape {shape}, expected "
                        f"{['batch' if e is None else e for e in expected]} from {SIDECAR_FILE}"
                    )
        export_id = meta.get("kpdiff.export_id")
        if export_id is not None and export_id != self.info.get("export_id"):
            raise KpdiffInputError(
                f"{path}: from another export than {self.directory / SIDECAR_FILE} (export ids "
                f"{export_id} and {self.info.get('export_id')}); export the model again"
            )
        return session

    def _other_k(self, path: Path, k: str) -> KpdiffInputError:
        return KpdiffInputError(
            f"{path}: a graph for {k} keypoints, but {self.directory / SIDECAR_FILE} is for "
            f"{self.num_keypoints}; the folder mixes files of two exports"
        )

    def _graph_shapes(self, graph: str) -> tuple[list, list]:
        """``(inputs, outputs)`` as ``[(name, [size or None for the batch axis, …])]``."""
        cond = [(c["name"], [None, *c["shape"]]) for c in self.info["cond"]]
        heat = [None, self.num_keypoints, *self.heatmap_size]
        if graph == "encoder":
            return [("clips", [None, self.num_frames, 3, *self.input_size])], cond
        return [("x_t", heat), ("t", [None]), *cond], [("x0_hat", heat)]

    # ---------------------------------------------------------------------------- inference

    def encode(self, clips: np.ndarray) -> list[np.ndarray]:
        """The condition, once per clip: ``clips [B, T, 3, H, W]`` (checked as in
        :meth:`predict`) → the encoder graph's outputs (``pyramid_x1 [B, …]`` …)."""
        clips = self._check_clips(clips)
        return self._encoder.run(None, {"clips": clips})

    def denoise(self, x_t: np.ndarray, t: np.ndarray, cond: list[np.ndarray]) -> np.ndarray:
        """One decoder step: ``x_t [M, K, H/4, W/4]`` float32, ``t [M]`` int64, the condition
        repeated to M → x̂₀ ``[M, K, H/4, W/4]`` (signal units). Inputs are not checked."""
        feeds = {"x_t": x_t, "t": t, **dict(zip(self._cond_names, cond, strict=True))}
        return self._decoder.run(None, feeds)[0]

    def predict(
        self,
        clips: np.ndarray,
        *,
        num_samples: int | None = None,
        steps: int | None = None,
        noise: np.ndarray | None = None,
        seed: int = 0,
    ) -> OnnxPoseResult:
        """Keypoints of the key frames, as :meth:`kpdiff.DiffPose.predict` computes them.

        Args:
            clips: ``[B, T, 3, H, W]`` normalised float images (B ≥ 1, finite, ``|x| <= 1e4``),
                T and ``(H, W)`` as exported; float16/float64 are cast to float32.
            num_samples: N ≥ 1. Default: the model's (``sampler.json``; 10 for the presets).
            steps: DDIM steps in ``[1, T]``. Default: the model's (4 for the presets).
            noise: x_T, ``[N, B, K, H/4, W/4]`` or ``[N·B, K, H/4, W/4]`` (hypothesis-major,
                the layout of the noise ``DiffPose.predict`` draws), finite floats. Default:
                drawn from ``numpy.random.default_rng(seed)``.
            seed: seed of that draw (and of DDIM's noise when the model's η > 0). Default ``0``.

        Returns:
            An :class:`OnnxPoseResult`: ``keypoints [B, K, 2]`` (crop pixels), ``scores
            [B, K]``, ``spread [B, K]``, ``heatmaps [B, K, H/4, W/4]``.

        Raises:
            KpdiffInputError: bad ``clips``, ``noise`` or options, naming the argument; a
                decoder output with NaN/inf values, naming the step.
        """
        s = self._sampling
        n = check_int("num_samples", s["num_samples"] if num_samples is None else num_samples)
        steps = check_int("steps", s["steps"] if steps is None else steps, high=self._T)
        seed = check_int("seed", seed, low=0)
        clips = self._check_clips(clips)
        b = clips.shape[0]
        k, (h, w) = self.num_keypoints, self.heatmap_size
        rng = np.random.default_rng(seed)
        if noise is None:
            x = rng.standard_normal((n * b, k, h, w), dtype=np.float32)
        else:
            x = _check_noise(noise, n, b, (k, h, w))
        cond = self._encoder.run(None, {"clips": clips})
        cond = [np.concatenate([c] * n, axis=0) if n > 1 else c for c in cond]  # index i·B + b

        timesteps = ddim_timesteps(self._T, steps)
        eta = float(s["eta"])
        for i, t in enumerate(timesteps):
            x0_hat = self.denoise(x, np.full((n * b,), t, dtype=np.int64), cond)
            if not np.isfinite(x0_hat).all():
                raise KpdiffInputError(
                    f"denoiser output: expected finite values, got "
                    f"{int((~np.isfinite(x0_hat)).sum())} NaN/inf entries at step {i + 1} of "
                    f"{steps} (t = {int(t)}); check the clips and the exported model"
                )
            if i + 1 == len(timesteps):
                break  # the last x̂₀ is the answer: no update after it
            if s["renew"]:
                x0_hat = self._renew(x0_hat)
            x = ddim_step(
                x, x0_hat, self._abar[t], self._abar[timesteps[i + 1]], eta=eta,
                clip_range=self._clip, rng=rng,
            )  # fmt: skip
        hyps = self._to_heatmaps(x0_hat).reshape(n, b, k, h, w)
        heatmaps = hyps.mean(axis=0)
        keypoints, scores = self._decode(heatmaps)
        hyp_kp = self._decode(hyps.reshape(n * b, k, h, w))[0].reshape(n, b, k, 2)
        spread = np.sqrt(((hyp_kp - hyp_kp.mean(axis=0)) ** 2).sum(-1).mean(0))
        return OnnxPoseResult(keypoints, scores, spread.astype(np.float32), heatmaps)

    def _check_clips(self, clips: Any) -> np.ndarray:
        t, (h, w) = self.num_frames, self.input_size
        spec = f"[B, T={t}, 3, {h}, {w}]"
        if not isinstance(clips, np.ndarray):
            raise KpdiffInputError(
                f"clips: expected a numpy array {spec}, got {type(clips).__name__}"
            )
        shape = list(clips.shape)
        if clips.ndim != 5 or tuple(shape[1:]) != (t, 3, h, w) or shape[0] < 1:
            raise KpdiffInputError(f"clips: expected shape {spec} with B >= 1, got {shape}")
        if not np.issubdtype(clips.dtype, np.floating):
            raise KpdiffInputError(
                f"clips: expected float32 normalised images (e.g. uint8 / 255, then mean/std), "
                f"got {clips.dtype}"
            )
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if not np.isfinite(clips).all() or np.abs(clips).max() > CLIP_MAX_ABS:
            raise KpdiffInputError(
                f"clips: expected finite values with |x| <= {CLIP_MAX_ABS:g} (normalised "
                f"images), got max |x| = {float(np.abs(clips).max()):.3g}"
            )
        return clips

    def _to_heatmaps(self, x0_hat: np.ndarray) -> np.ndarray:
        """x̂₀ in signal units, clipped to ``[-scale, scale]`` → heatmap units ``[0, 1]``."""
        s = np.float32(self._scale)
        return (np.clip(x0_hat, -s, s) / s + np.float32(1.0)) * np.float32(0.5)

    def _decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self._codec
        return decode_heatmaps(
            heatmaps, stride=self._stride, refine=c["refine"], sigma=float(c["sigma"]),
            dark_kernel=int(c["dark_kernel"]),
        )  # fmt: skip

    def _renew(self, x0_hat: np.ndarray) -> np.ndarray:
        """EnsembleSampler.renew_x0: clean Gaussians at the decoded joints, scaled to the peak."""
        keypoints, peaks = self._decode(self._to_heatmaps(x0_hat))
        clean = render_heatmaps(
            keypoints, self.heatmap_size, stride=self._stride, sigma=float(self._codec["sigma"])
        )
        clean = clean * np.clip(peaks, 0, 1)[..., None, None]
        return (np.float32(2.0) * clean - np.float32(1.0)) * np.float32(self._scale)


def _check_noise(noise: Any, n: int, b: int, tail: tuple[int, int, int]) -> np.ndarray:
    want = [n * b, *tail]
    if not isinstance(noise, np.ndarray):
        raise KpdiffInputError(f"noise: expected a numpy array {want}, got {type(noise).__name__}")
    if list(noise.shape) == [n, b, *tail]:
        noise = noise.reshape(want)
    if list(noise.shape) != want:
        raise KpdiffInputError(
            f"noise: expected shape [N={n}, B={b}, {tail[0]}, {tail[1]}, {tail[2]}] or {want}, "
            f"got {list(noise.shape)}"
        )
    if not np.issubdtype(noise.dtype, np.floating) or not np.isfinite(noise).all():
        raise KpdiffInputError(f"noise: expected finite float values, got {noise.dtype} values "
                               f"with NaN/inf or of another kind")  # fmt: skip
    return np.ascontiguousarray(noise, dtype=np.float32)
