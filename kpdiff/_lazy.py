"""Lazy package exports (PEP 562): ``from kpdiff import DiffPose`` imports torch, while
``kpdiff evaluate`` and the PoseTrack readers, which need only numpy, never do."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for a package whose names live in submodules.

    Args:
        package: the package's ``__name__``.
        exports: submodule (relative to ``package``) -> the public names it defines.

    Returns:
        ``__all__`` (sorted), and the module-level ``__getattr__`` / ``__dir__`` that import a
        name's submodule the first time the name is looked up.
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where, key=lambda n: (not n.isupper(), n.startswith("_"), n))

    def __getattr__(name: str) -> Any:  # noqa: N807
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(importlib.import_module(package).__dict__) | set(where))

    return names, __getattr__, __dir__
