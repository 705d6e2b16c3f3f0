"""The numpy arithmetic of the torch-free ONNX sampler: DDIM steps, heatmap decode and render.

What :class:`~kpdiff.onnx_sampler.OnnxPoseSampler` computes between the onnxruntime calls, in
numpy only: the DDIM timesteps and update (as ``kpdiff.kernels.ddim_step_reference``), the
heatmap decode (``GaussianHeatmapCodec.decode``: argmax, then quarter pixel or DARK) and the
Gaussian rendering of ``renew`` (``GaussianHeatmapCodec.encode``). It imports numpy and
kpdiff.errors only: it runs where torch is not installed.
"""

from __future__ import annotations

import numpy as np

from kpdiff.errors import KpdiffInputError
from kpdiff.strides import HEATMAP_STRIDE

__all__ = ["ddim_step", "ddim_timesteps", "decode_heatmaps", "render_heatmaps"]


def ddim_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """The timesteps diffusers' ``DDIMScheduler`` evaluates with ``timestep_spacing="trailing"``:
    ``round(arange(T, 0, −T/steps)) − 1``, e.g. 999, 749, 499, 249 for T = 1000 and 4 steps."""
    ratio = num_train_timesteps / steps
    return np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1


def ddim_step(
    x_t: np.ndarray,
    x0_hat: np.ndarray,
    alpha_t: float,
    alpha_prev: float,
    *,
    eta: float = 0.0,
    clip_range: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One DDIM update of an x₀-predicting model, as ``kpdiff.kernels.ddim_step_reference``:
    the five coefficients in float64, the arithmetic in float32 (``[*]`` any shape)."""
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = eta * variance**0.5
    c_a, c_b = np.float32(alpha_t**0.5), np.float32((1 - alpha_t) ** 0.5)
    c_prev, c_dir = np.float32(alpha_prev**0.5), np.float32(max(1 - alpha_prev - std**2, 0) ** 0.5)
    eps = (x_t - c_a * x0_hat) / c_b  # ε̂ from the unclipped x̂₀, as diffusers
    x0 = x0_hat if clip_range is None else np.clip(x0_hat, -clip_range, clip_range)
    prev = c_prev * x0 + c_dir * eps
    if std > 0:
        rng = rng if rng is not None else np.random.default_rng()
        prev = prev + np.float32(std) * rng.standard_normal(x_t.shape, dtype=np.float32)
    return prev.astype(np.float32, copy=False)


def decode_heatmaps(
    heatmaps: np.ndarray,
    *,
    stride: float = HEATMAP_STRIDE,
    refine: str = "quarter",
    sigma: float = 2.0,
    dark_kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """``GaussianHeatmapCodec.decode`` in numpy: ``heatmaps [B, K, H, W]`` → ``keypoints
    [B, K, 2]`` (input pixels) and ``maxvals [B, K]``, float32.

    Argmax (first maximum in row-major order), then ``"quarter"`` (a quarter pixel toward the
    larger neighbour, a missing neighbour counting as 0), ``"dark"`` (a Newton step on the log
    of the heatmap blurred by a Gaussian of size ``dark_kernel`` and std ``sigma``; the border
    pixels keep the quarter result) or ``"none"``. Defaults: stride
    :data:`~kpdiff.strides.HEATMAP_STRIDE` (4), ``"quarter"``, σ ``2.0``, kernel ``11``.
    """
    if refine not in ("none", "quarter", "dark"):
        raise KpdiffInputError(f"refine: expected 'none', 'quarter' or 'dark', got {refine!r:.60}")
    hm = np.asarray(heatmaps, dtype=np.float32)
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, h * w)
    idx = flat.argmax(axis=-1)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    u, v = idx % w, idx // w
    coords = np.stack([u, v], axis=-1).astype(np.float32)
    if refine != "none":

        def at(du: int, dv: int) -> np.ndarray:
            i = np.clip(v + dv, 0, h - 1) * w + np.clip(u + du, 0, w - 1)
            return np.take_along_axis(flat, i[..., None], axis=-1)[..., 0]

        zero = np.float32(0.0)
        right = np.where(u < w - 1, at(1, 0), zero)
        left = np.where(u > 0, at(-1, 0), zero)
        down = np.where(v < h - 1, at(0, 1), zero)
        up = np.where(v > 0, at(0, -1), zero)
        shift = np.stack([np.sign(right - left), np.sign(down - up)], axis=-1)
        coords = coords + np.float32(0.25) * shift
    s = np.float32(stride)
    keypoints = (coords + np.float32(0.5)) * s - np.float32(0.5)
    if refine == "dark":
        argmax = np.stack([u, v], axis=-1).astype(np.float32)
        dark = (argmax + _dark_offset(hm, u, v, dark_kernel, sigma) + np.float32(0.5)) * s
        dark = dark - np.float32(0.5)
        on_border = ((u == 0) | (u == w - 1) | (v == 0) | (v == h - 1))[..., None]
        keypoints = np.where(on_border, keypoints, dark)
    return keypoints.astype(np.float32), maxvals


def _dark_offset(
    hm: np.ndarray, u: np.ndarray, v: np.ndarray, kernel: int, sigma: float
) -> np.ndarray:
    """``kpdiff.codecs._dark_offset`` in numpy: the offset ``−H⁻¹ ∇`` of the log heatmap."""
    h, w = hm.shape[-2:]
    radius = kernel // 2
    taps = np.arange(kernel, dtype=np.float32) - np.float32(radius)
    g = np.exp(-(taps**2) / np.float32(2 * sigma**2))
    g = g / g.sum()
    padded = np.pad(hm, ((0, 0), (0, 0), (0, 0), (radius, radius)))
    blurred = sum(g[j] * padded[..., j : j + w] for j in range(kernel))
    padded = np.pad(blurred, ((0, 0), (0, 0), (radius, radius), (0, 0)))
    blurred = sum(g[j] * padded[..., j : j + h, :] for j in range(kernel))
    peak = hm.max(axis=(-2, -1), keepdims=True)
    top = np.maximum(blurred.max(axis=(-2, -1), keepdims=True), np.float32(1e-10))
    blurred = blurred * (peak / top)
    interior = (u >= radius) & (u < w - radius) & (v >= radius) & (v < h - radius)
    with np.errstate(all="ignore"):
        tiny = np.float32(1e-10)
        off_blurred = _taylor_offset(np.log(np.maximum(blurred, tiny)), u, v)
        off_raw = _taylor_offset(np.log(np.maximum(hm, tiny)), u, v)
    return np.where(interior[..., None], off_blurred, off_raw)


def _taylor_offset(logh: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    b, k, h, w = logh.shape
    flat = logh.reshape(b, k, h * w)

    def at(du: int, dv: int) -> np.ndarray:
        i = np.clip(v + dv, 0, h - 1) * w + np.clip(u + du, 0, w - 1)
        return np.take_along_axis(flat, i[..., None], axis=-1)[..., 0]

    half, quarter = np.float32(0.5), np.float32(0.25)
    c = at(0, 0)
    dx = half * (at(1, 0) - at(-1, 0))
    dy = half * (at(0, 1) - at(0, -1))
    dxx = at(1, 0) - 2 * c + at(-1, 0)
    dyy = at(0, 1) - 2 * c + at(0, -1)
    dxy = quarter * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (dxx < 0) & (det > 1e-12)
    safe = np.where(ok, det, np.float32(1.0))
    off = np.stack([-(dyy * dx - dxy * dy) / safe, -(dxx * dy - dxy * dx) / safe], axis=-1)
    off = np.clip(off, -1.0, 1.0).astype(np.float32)
    ok = ok & np.isfinite(off).all(axis=-1)
    return np.where(ok[..., None], off, np.float32(0.0))


def render_heatmaps(
    keypoints: np.ndarray,
    heatmap_size: tuple[int, int],
    *,
    stride: float = HEATMAP_STRIDE,
    sigma: float = 2.0,
) -> np.ndarray:
    """``GaussianHeatmapCodec.encode`` of visible joints in numpy: ``keypoints [B, K, 2]`` (input
    pixels) → ``[B, K, H, W]`` float32, peak 1, zero for a joint more than 3σ outside the map."""
    h, w = heatmap_size
    uv = (keypoints.astype(np.float32) + np.float32(0.5)) / np.float32(stride) - np.float32(0.5)
    u, v = uv[..., 0, None, None], uv[..., 1, None, None]
    ys = np.arange(h, dtype=np.float32).reshape(h, 1)
    xs = np.arange(w, dtype=np.float32).reshape(1, w)
    heat = np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / np.float32(2 * sigma**2))
    reach = 3 * sigma
    inside = (
        (uv[..., 0] > -reach)
        & (uv[..., 0] < w - 1 + reach)
        & (uv[..., 1] > -reach)
        & (uv[..., 1] < h - 1 + reach)
    )
    return (heat * inside[..., None, None].astype(np.float32)).astype(np.float32)
