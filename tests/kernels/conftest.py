"""Kernel tests: the Triton kernels against their torch references.

Without a GPU the kernels run on CPU tensors through triton's interpreter, which must be
switched on (``TRITON_INTERPRET=1``) before a ``@triton.jit`` function is decorated: this file
sets it at import, before kpdiff's kernel modules (imported lazily) are loaded. triton itself
may have been imported earlier (``import kpdiff`` pulls it in through diffusers/torch, and
other test directories are collected first); the kernels avoid triton's own jit'd library
functions so that this does not matter. With a GPU the same tests run the compiled kernels on
CUDA tensors.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Callable, Iterator

import pytest

from kpdiff.kernels import triton_available, use_kernels

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def device() -> Iterator[torch.device]:
    """The device the Triton path runs on, with that path forced for the whole module."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
    with use_kernels(force=True):
        yield DEVICE


def make_tensor(
    shape: tuple[int, ...],
    layout: str = "contiguous",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device = DEVICE,
    scale: float = 1.0,
) -> torch.Tensor:
    """A random normal tensor of ``shape`` whose memory layout is ``layout``.

    ``"contiguous"``; ``"channels_last"`` (4-D only, else contiguous); ``"transposed"`` (the
    last two dims swapped in memory); ``"sliced"`` (every other element of a bigger tensor in
    dims 1 and -1, offset by one in dim -2 when 3-D+); ``"channel_sliced"`` (every other
    slice of dim 1 only, so each map stays dense but the channel stride is not ``h·w``).
    """
    g = torch.Generator().manual_seed(seed)

    def randn(s: tuple[int, ...]) -> torch.Tensor:
        return (torch.randn(s, generator=g) * scale).to(device=device, dtype=dtype)

    if layout == "channels_last" and len(shape) == 4:
        return randn(shape).contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and len(shape) >= 2:
        return randn((*shape[:-2], shape[-1], shape[-2])).transpose(-1, -2)
    if layout == "channel_sliced" and len(shape) >= 2:
        return randn((shape[0], 2 * shape[1], *shape[2:]))[:, 1::2]
    if layout == "sliced" and len(shape) >= 2:
        big = list(shape)
        big[1] *= 2
        big[-1] = big[-1] * 2 if len(shape) > 2 else big[-1]
        if len(shape) >= 3:
            big[-2] += 1
        t = randn(tuple(big))
        t = t[:, ::2]
        if len(shape) >= 3:
            t = t[..., 1:, ::2]
        assert tuple(t.shape) == tuple(shape), (t.shape, shape)
        return t
    return randn(shape)


@pytest.fixture(scope="session")
def make() -> Callable[..., torch.Tensor]:
    """:func:`make_tensor`, as a fixture (session-scoped, so hypothesis tests can use it)."""
    return make_tensor
