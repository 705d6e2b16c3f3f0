"""The package's public API: every exported name resolves and is documented, and the parts that
must run without torch (the metric, the ONNX sampler, the Hub card) do not import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kpdiff

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_has_a_docstring():
    # in a fresh interpreter, one name at a time: an import cycle hides once another test has
    # imported the package's modules (``from kpdiff import PosePipeline`` once failed so)
    code = (
        "import importlib, inspect, sys\n"
        "names = importlib.import_module('kpdiff').__all__\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m == 'kpdiff' or m.startswith('kpdiff.')]:\n"
        "        del sys.modules[m]\n"
        "    obj = getattr(importlib.import_module('kpdiff'), name)\n"
        "    if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):\n"
        "        print('undocumented', name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(kpdiff.__all__)), done.stdout
    assert {"DiffPose", "OnnxPoseSampler", "export_onnx", "ModelCard", "PosePipeline"} <= set(
        kpdiff.__all__
    )


def test_torch_free_parts_import_no_torch():
    code = (
        "import sys\n"
        "from kpdiff import KpdiffInputError, ModelCard, OnnxPoseSampler, __version__\n"
        "from kpdiff.metrics import evaluate_files\n"
        "import kpdiff.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', "
        "'timm')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
