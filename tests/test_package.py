"""The package's public API: every exported name resolves and is documented, and the parts that
must run without torch (the metric, the ONNX sampler, the Hub card) do not import it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import kpdiff

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_has_a_docstring():
    undocumented = []
    for name in kpdiff.__all__:
        obj = getattr(kpdiff, name)
        if name == "__version__":
            assert isinstance(obj, str) and obj
            continue
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            undocumented.append(name)
    assert not undocumented, undocumented
    assert sorted(dir(kpdiff)) == sorted(set(dir(kpdiff)))  # lazy exports list each name once
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
