"""A mapping read from YAML → a dataclass, checking every key and every value's type.

The experiment config (:mod:`kpdiff.engine.config`) is dataclasses; a file or a command-line
override is a mapping. :func:`build_dataclass` builds the one from the other for the types those
dataclasses use (numbers, strings, booleans, ``Literal``, ``X | None``, tuples, mappings and
nested dataclasses), and names the field in every error (``data.augment.rotation: expected a
number, got 'x'``). Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from kpdiff.errors import KpdiffInputError

__all__ = ["build_dataclass", "convert_value"]


def convert_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked and converted to the annotated type ``tp``; ``where`` names it in errors
    (``"optim.lr"``)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(value, arg, where)
            except KpdiffInputError as err:
                errors.append(str(err))
        raise KpdiffInputError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise KpdiffInputError(f"{where}: expected a list, got {value!r}")
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(convert_value(v, item, where) for v in value)
        if len(value) != len(args):
            raise KpdiffInputError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(convert_value(v, a, where) for v, a in zip(value, args, strict=True))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise KpdiffInputError(f"{where}: expected a mapping, got {value!r}")
        key_tp, value_tp = args or (Any, Any)
        return {
            convert_value(k, key_tp, where): convert_value(v, value_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if origin is typing.Literal:
        if isinstance(value, bool) or value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise KpdiffInputError(f"{where}: expected one of {choices}, got {value!r:.80}")
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise KpdiffInputError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            raise KpdiffInputError(
                f"{where}: expected a finite number, got an integer of {len(str(value))} digits"
            ) from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KpdiffInputError(f"{where}: expected an integer, got {value!r}")
        if abs(value) >= 2**63:
            raise KpdiffInputError(
                f"{where}: expected an integer below 2^63, got one of {len(str(value))} digits"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise KpdiffInputError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise KpdiffInputError(f"{where}: expected a string, got {value!r}")
        return value
    if is_dataclass(tp):
        return build_dataclass(tp, value, where)
    raise KpdiffInputError(f"{where}: unsupported type {tp}")


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """``cls(**data)`` with every key a field of ``cls`` and every value converted to its type;
    ``where`` is the path of ``data`` in errors (``""``: the top)."""
    if not isinstance(data, dict):
        raise KpdiffInputError(
            f"{where or 'config'}: expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KpdiffInputError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(names))}"
        )
    missing = [
        f.name
        for f in fields(cls)
        if f.init and f.name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise KpdiffInputError(f"{where or 'config'}: missing key(s) {', '.join(missing)}")
    kwargs = {
        k: convert_value(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except KpdiffInputError as err:  # a check of the class itself (SyntheticConfig's ranges)
        raise KpdiffInputError(f"{where}: {err}" if where else str(err)) from None
