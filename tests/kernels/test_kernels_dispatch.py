"""Dispatch: the torch reference by default on CPU, the switches, and no triton needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

import kpdiff.kernels as K
from kpdiff import GaussianHeatmapCodec, KpdiffError, KpdiffInputError
from kpdiff.kernels import _dispatch, reference


@pytest.fixture(autouse=True)
def _auto_mode():
    """Every test starts in the default mode and leaves it as it found it."""
    with K.use_kernels(True):
        _dispatch._override = None
        yield


def test_cpu_tensors_take_the_reference_by_default(monkeypatch):
    def boom(*_, **__):
        raise AssertionError("the Triton path must not run on CPU by default")

    for name in ("triton_lookup", "triton_ddim", "triton_render", "triton_decode"):
        monkeypatch.setitem(sys.modules, f"kpdiff.kernels.{name}", SimpleNamespace(
            Lookup=boom, lookup_forward=boom, ddim_step_triton=boom,
            render_heatmaps_triton=boom, decode_heatmaps_triton=boom,
        ))  # fmt: skip
    x, f = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 4, 5)
    assert K.kernel_mode() == "auto" and not K.use_triton(x, f)
    assert torch.equal(K.lookup_concat(x, f), reference.lookup_concat_reference(x, f))
    assert torch.equal(K.ddim_step(x, x, 0.2, 0.5), reference.ddim_step_reference(x, x, 0.2, 0.5))
    kp, vis = torch.rand(2, 3, 2) * 60, torch.ones(2, 3)
    got, want = K.render_heatmaps(kp, vis), reference.render_heatmaps_reference(kp, vis)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    got, want = K.decode_heatmaps(x), reference.decode_heatmaps_reference(x)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    codec = GaussianHeatmapCodec(heatmap_size=(4, 5))
    codec.decode(x)  # the codec keeps its own CPU path
    codec.encode(kp, vis)


def test_auto_mode_picks_triton_for_cuda_tensors_only(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    cuda, cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    assert K.use_triton(cuda, cuda)
    assert not K.use_triton(cuda, cpu)
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    assert not K.use_triton(cuda)


def test_env_var_and_use_kernels(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    cuda = SimpleNamespace(is_cuda=True)
    monkeypatch.setenv("KPDIFF_DISABLE_KERNELS", "1")
    assert K.kernel_mode() == "off" and not K.use_triton(cuda)
    with K.use_kernels(True):  # explicit code overrides the environment
        assert K.kernel_mode() == "auto" and K.use_triton(cuda)
    assert K.kernel_mode() == "off"
    monkeypatch.setenv("KPDIFF_DISABLE_KERNELS", "0")
    assert K.kernel_mode() == "auto"
    with K.use_kernels(False):
        assert not K.use_triton(cuda)
        with K.use_kernels(force=True):
            assert K.kernel_mode() == "force" and K.use_triton(SimpleNamespace(is_cuda=False))
        assert K.kernel_mode() == "off"
    assert K.kernel_mode() == "auto"
    K.use_kernels(False)  # a plain call stays in effect
    assert K.kernel_mode() == "off"


def test_compiling_takes_the_reference(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with K.use_kernels(force=True):
        assert not K.use_triton(SimpleNamespace(is_cuda=True))


def test_force_needs_triton(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    with pytest.raises(KpdiffError, match="triton is not installed"):
        K.use_kernels(force=True)
    with pytest.raises(KpdiffError, match="contradicts"):
        K.use_kernels(False, force=True)


def test_bad_inputs_are_named():
    with pytest.raises(KpdiffInputError, match="feat"):
        K.lookup_concat(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 6))
    with pytest.raises(KpdiffInputError, match="x0_hat"):
        K.ddim_step(torch.randn(2, 3), torch.randn(3, 2), 0.1, 0.5)
    with pytest.raises(KpdiffInputError, match="alpha_t"):
        K.ddim_step(torch.randn(2, 3), torch.randn(2, 3), 0.6, 0.5)
    with pytest.raises(KpdiffInputError, match="visibility"):
        K.render_heatmaps(torch.randn(2, 3, 2), torch.ones(2, 4))
    with pytest.raises(KpdiffInputError, match="refine"):
        K.decode_heatmaps(torch.randn(1, 2, 3, 4), refine="dark")


def test_import_without_triton():
    """``import kpdiff`` and every dispatching function work when triton cannot be imported."""
    code = textwrap.dedent(
        """
        import sys

        sys.modules["triton"] = None  # as if not installed: import fails, find_spec is None
        import torch
        import kpdiff
        from kpdiff import kernels as K
        assert not K.triton_available() and sys.modules["triton"] is None
        x = torch.randn(2, 3, 4, 5)
        K.lookup_concat(x, x); K.ddim_step(x, x, 0.1, 0.5); K.decode_heatmaps(x)
        K.render_heatmaps(torch.rand(2, 3, 2), torch.ones(2, 3))
        try:
            K.use_kernels(force=True)
        except kpdiff.KpdiffError:
            print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("ok")


def test_interpreter_works_when_triton_was_imported_first():
    """Other tests import kpdiff (and so triton) before this directory's conftest sets
    TRITON_INTERPRET: the kernels must not depend on triton's own jit'd library functions."""
    code = textwrap.dedent(
        """
        import os
        import triton, torch
        os.environ["TRITON_INTERPRET"] = "1"
        from kpdiff import kernels as K
        with K.use_kernels(force=True):
            x = torch.randn(2, 5, 3, 4, requires_grad=True)
            f = torch.randn(2, 3, 3, 4, requires_grad=True)
            K.lookup_concat(x, f).sum().backward()
            K.ddim_step(x.detach(), x.detach(), 0.1, 0.5, eta=1.0)
            K.decode_heatmaps(x.detach())
            K.render_heatmaps(torch.rand(2, 3, 2), torch.ones(2, 3))
        print("ok")
        """
    )
    if not K.triton_available():
        pytest.skip("triton is not installed")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("ok")
