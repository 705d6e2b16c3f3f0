"""The kernel benchmark's no-GPU path: it says it needs a GPU and exits 0."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels" / "run.py"


def test_benchmark_without_gpu_says_so_and_exits_0(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("kpdiff_kernel_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main(["--quick"]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
