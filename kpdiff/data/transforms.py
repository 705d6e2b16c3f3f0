"""Affine helpers of the top-down crop: box → centre/scale, the crop affine, and its inverse.

Coordinates follow kpdiff's pixel-centre convention (see :mod:`kpdiff.codecs`): pixel ``(i, j)``
of an image has its centre at ``x = j, y = i`` and covers ``[j − ½, j + ½] × [i − ½, i + ½]``.
This is also OpenCV's convention in ``cv2.warpAffine``, so the matrices below are passed to it
unchanged and the same matrix maps keypoints and pixels.

A crop of output size ``(H_out, W_out)`` shows the image region of size ``scale · pixel_std``
pixels centred on ``center``: the region's edges map to the crop's pixel edges
``−½ … W_out − ½``, i.e.

    x_crop = k · R(θ) · (x − c) + ((W_out − 1) / 2, (H_out − 1) / 2),
    k = W_out / (s_w · pixel_std),

followed, for a flipped crop, by ``x_crop ↦ W_out − 1 − x_crop``.
"""

from __future__ import annotations

import math

import numpy as np

from kpdiff.errors import KpdiffInputError

__all__ = ["apply_affine", "box_to_center_scale", "crop_affine", "invert_affine"]


def box_to_center_scale(
    box: np.ndarray,
    aspect_ratio: float,
    *,
    padding: float = 1.25,
    pixel_std: float = 200.0,
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet/DCPose box → ``(center, scale)``: aspect fixed by growing one side, then ×padding.

    Args:
        box: ``[4]`` ``xywh`` (top-left corner, width, height) in image pixels.
        aspect_ratio: crop ``W / H`` (``192 / 256`` for a 256×192 input).
        padding: enlargement of the fixed-aspect box. Default ``1.25``.
        pixel_std: the unit of ``scale``. Default ``200`` (HRNet, DCPose).

    Returns:
        ``center [2]`` ``(x, y)`` and ``scale [2]`` ``(w, h) / pixel_std``, both float64.
    """
    x, y, w, h = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h)):
        raise KpdiffInputError(f"box: expected finite xywh with w, h > 0, got {[x, y, w, h]}")
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) / pixel_std * padding


def crop_affine(
    center: np.ndarray,
    scale: np.ndarray,
    output_size: tuple[int, int],
    *,
    rotation: float = 0.0,
    flip: bool = False,
    pixel_std: float = 200.0,
) -> np.ndarray:
    """The ``[2, 3]`` float64 matrix mapping image pixels to crop pixels (see the module doc).

    Args:
        center: ``[2]`` crop centre ``(x, y)`` in image pixels.
        scale: ``[2]`` region size ``(w, h) / pixel_std``; only ``w`` sets the zoom (the aspect is
            the output's).
        output_size: ``(H_out, W_out)`` of the crop, e.g. ``(256, 192)``.
        rotation: rotation in degrees, counter-clockwise on screen. Default ``0``.
        flip: mirror the crop left–right after warping. Default ``False``.
        pixel_std: the unit of ``scale``. Default ``200``.
    """
    h_out, w_out = output_size
    k = w_out / (float(scale[0]) * pixel_std)
    theta = math.radians(rotation)
    cos, sin = math.cos(theta) * k, math.sin(theta) * k
    # y points down, so a counter-clockwise rotation on screen is R(−θ) in (x, y).
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([(w_out - 1) / 2, (h_out - 1) / 2]) - linear @ np.asarray(center, float)
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    if flip:
        matrix[0] = -matrix[0]
        matrix[0, 2] += w_out - 1
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``[2, 3]`` affine matrix, ``[2, 3]`` float64."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map points ``[..., 2]`` with a ``[2, 3]`` affine matrix; returns ``[..., 2]`` float64."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]
