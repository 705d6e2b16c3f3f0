"""No kpdiff module imports another kpdiff module's private (``_``-prefixed) names.

A helper that several modules use is public in its home module (it may stay out of ``__all__``);
``from kpdiff.x import _helper`` couples a module to another's internals, so it is caught here.
Dunder names (``__version__``) are not private, and aliasing a public name to a private one
(``from kpdiff.progress import progress as _progress``) is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kpdiff

PACKAGE = Path(kpdiff.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    """The dotted module name of ``path`` under ``root`` (``root``'s name is the package)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` imports from (relative ones too)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def private_imports(root: Path = PACKAGE) -> list[str]:
    """``"file:line: from <module> import <name>"`` for every private name a module under
    ``root`` imports from a module of the same package (``root``'s name)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _imported_module(node, module, path.name == "__init__.py")
            if source != root.name and not source.startswith(root.name + "."):
                continue  # __future__, the standard library, third-party packages
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    rel = path.relative_to(root.parent).as_posix()
                    found.append(f"{rel}:{node.lineno}: from {source} import {name}")
    return found


def test_no_module_imports_another_modules_private_names():
    found = private_imports()
    assert not found, (
        "kpdiff modules import private names from other kpdiff modules; make each name public "
        "in its home module (drop the underscore) and import that:\n  " + "\n  ".join(found)
    )


def test_the_check_finds_private_imports(tmp_path):
    pkg = tmp_path / "kpdiff"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "data" / "__init__.py").write_text("from . import _hidden\n")
    (pkg / "data" / "reader.py").write_text(
        "from __future__ import annotations\n"
        "from os import _exit\n"  # not a kpdiff module
        "from kpdiff import __version__\n"  # a dunder is not private
        "from kpdiff.progress import progress as _progress\n"  # a public name, aliased
        "from kpdiff.data.json import _load_json\n"
        "from .json import load, _fail\n"
        "from ..kernels import _lookup_unchecked\n"
        "def f():\n"
        "    from kpdiff.data.scene import _Scene\n"
    )
    assert private_imports(pkg) == [
        "kpdiff/data/__init__.py:1: from kpdiff.data import _hidden",
        "kpdiff/data/reader.py:5: from kpdiff.data.json import _load_json",
        "kpdiff/data/reader.py:6: from kpdiff.data.json import _fail",
        "kpdiff/data/reader.py:7: from kpdiff.kernels import _lookup_unchecked",
        "kpdiff/data/reader.py:9: from kpdiff.data.scene import _Scene",
    ]
