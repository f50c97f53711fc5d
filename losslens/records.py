"""Typed records from YAML: a mapping checked against a dataclass's field types and declared ranges.

Core (docs/architecture.md): every config record, the study's and each stage's, is built here, so a
stage needs no import of the top-level :mod:`losslens.config` for its schema. Errors name file and
field: ``configs/tiny.yaml: train.glbal_batch: unknown key (did you mean 'global_batch'?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from losslens.errors import ConfigError
from losslens.schema import load_yaml, value_problem


_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_COUNT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_count(value: Any) -> int:
    """An integer count, also written ``4M``, ``500K``, ``1.5B`` or ``2e6``. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a count")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _COUNT_RE.match(value)
        if m:
            number = float(m.group(1)) * _SUFFIXES.get(m.group(2).upper(), 1)
            if number.is_integer():
                return int(number)
    raise ValueError(f"expected an integer (e.g. 2048, 4M, 1.5B), got {value!r}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _type_name(get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _mismatch(tp: Any, value: Any, where: str, file: str, why: str = "") -> ConfigError:
    return ConfigError(f"{file}: {where}: {why or f'expected {_type_name(tp)}, got {value!r}'}")


class _OutOfRange(ConfigError):
    """A value of the right type outside its declared range: said as is, also inside a union."""


def convert(tp: Any, value: Any, where: str, file: str) -> Any:
    """``value`` from the YAML checked against, and converted to, the field type ``tp`` (and its declared
    range: ``losslens.schema``)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base = get_args(tp)[0]
        # a number is checked against its declared range first: "at most 4,294,967,295", not "beyond 64 bits"
        converted = (_convert_scalar(base, value, where, file, bounded=False) if base in (int, float)
                     else convert(base, value, where, file))
        problem = value_problem(tp, converted)
        if problem:
            raise _OutOfRange(f"{file}: {where}{problem[0]}: {problem[1]}")
        return converted
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, where, file)
    if origin is Literal:
        if value not in get_args(tp):
            raise _mismatch(tp, value, where, file,
                            f"expected one of {', '.join(repr(a) for a in get_args(tp))}, got {value!r}")
        return value
    if origin in (list, dict) or tp is dict or dataclasses.is_dataclass(tp):
        return _convert_collection(tp, value, where, file)
    return _convert_scalar(tp, value, where, file)


def _convert_union(tp: Any, value: Any, where: str, file: str) -> Any:
    """``value`` as the first member of the union that accepts it (None where the union allows it)."""
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    mapping_error = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(arg, value, where, file)
        except _OutOfRange:
            raise
        except ConfigError as e:
            if isinstance(value, dict) and dataclasses.is_dataclass(arg):
                mapping_error = e  # e.g. an unknown key: says more than "expected int | mapping"
    if mapping_error is not None:
        raise mapping_error
    raise _mismatch(tp, value, where, file)


def _convert_collection(tp: Any, value: Any, where: str, file: str) -> Any:
    """A list, a mapping of one item type, a nested dataclass, or free-form options (``dict``)."""
    origin = get_origin(tp)
    if not isinstance(value, (list, tuple) if origin is list else dict):
        raise _mismatch(tp, value, where, file)
    if tp is dict:  # free-form options (e.g. a generator's), checked by their consumer
        return value
    if origin is list:
        (item,) = get_args(tp)
        return [convert(item, v, f"{where}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict:
        _, item = get_args(tp)
        return {str(k): convert(item, v, f"{where}.{k}", file) for k, v in value.items()}
    return build_dataclass(tp, value, where, file)


def _convert_scalar(tp: Any, value: Any, where: str, file: str, bounded: bool = True) -> Any:
    """A bool, a count (``int``: 2048, 4M, 1.5B), a float or a string; no silent casts between them."""
    if tp not in (bool, int, float, str):
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    if tp is int:
        try:
            count = parse_count(value)
        except ValueError as e:
            raise _mismatch(tp, value, where, file, str(e)) from None
        problem = value_problem(int, count) if bounded else None  # beyond 64 bits, whatever the field
        if problem:
            raise _OutOfRange(f"{file}: {where}: {problem[1]}")
        return count
    if tp is float:
        if not isinstance(value, bool) and isinstance(value, (int, float, str)):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                pass
            else:
                if not math.isfinite(number):  # no setting means anything at nan or infinity
                    raise _OutOfRange(f"{file}: {where}: must be a finite number, got {value!r}")
                return number
    elif isinstance(value, tp):  # bool or str
        return value
    raise _mismatch(tp, value, where, file)


def build_dataclass(cls: type, data: dict, where: str, file: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types; ``where`` is the dotted path."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"{file}: {path}: unknown key{hint}")
        kwargs[key] = convert(hints[key], value, path, file)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{file}: {where + '.' if where else ''}{missing[0]}: required key is missing")
    return cls(**kwargs)


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """A YAML file whose top level is a mapping; errors name the file (and line, for syntax errors and keys
    given twice: ``losslens.schema.load_yaml``, the one YAML loader)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is not part of the YAML
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    raw = load_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw
