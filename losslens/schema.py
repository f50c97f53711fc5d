"""Valid ranges declared once, beside each field, and the one YAML loader.

Every numeric field says what it may hold in its type, where it is declared::

    lr: Annotated[float, Range(gt=0)] = 3e-4
    betas: list[Annotated[float, Range(ge=0, lt=1)]]

and the readers enforce it when the file or flag is read: study configs, task files, manifests and
import mappings (``losslens.config.build_dataclass``), command-line flags (``losslens.argtypes.flag``),
the Python API (:func:`check_fields`) and results tables (``losslens.contracts.RESULTS_SCHEMA``).
Floats must be finite and integers fit 64 bits, declared or not, so a nonsense value is refused
where it is read, naming the file and field, not met later as a crash or a silently wrong number.

This is a leaf module: it imports nothing from losslens but the error types.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, get_args, get_origin

import yaml

from losslens.errors import ConfigError

INT_MAX = 2**63 - 1  # numpy's and torch's int64: a larger integer wraps around, e.g. to a negative count
SEED_MAX = 2**32 - 1  # every seed fits numpy's legacy and torch's generators, and sums of seeds do not wrap
MAX_THREADS = 1024  # torch segfaults creating 100,000 threads


@dataclass(frozen=True)
class Range:
    """The finite values a number may take: bounds (``ge``/``gt``/``le``/``lt``), a few allowed extras outside
    them (``also``: e.g. 0 for "none"), and ``what`` it is, said in the message."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    also: tuple = ()
    what: str = ""

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is out of range (``must be positive, got 0``), or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the type is checked elsewhere
        if value in self.also:
            return None
        if isinstance(value, float) and math.isnan(value):
            return "must be a number, got nan"
        if isinstance(value, float) and math.isinf(value):
            return f"must be a finite number, got {value}"
        above_low, below_high = self.above_low(value), self.below_high(value)
        if above_low and below_high:
            return None
        # A large upper bound is a sanity limit: say only the side that was crossed ("must be positive").
        limit = self.le if self.le is not None else self.lt
        side = None if limit is None or abs(limit) < 1000 else ("low" if not above_low else "high")
        text = self.describe(side)
        return f"must {'not be negative' if text == 'not negative' else 'be ' + text}, got {_show(value)}"

    # Bounds of a number, or elementwise of a numpy array (results tables check whole columns at once).
    def above_low(self, value: Any) -> Any:
        return (True if self.ge is None else value >= self.ge) & (True if self.gt is None else value > self.gt)

    def below_high(self, value: Any) -> Any:
        return (True if self.le is None else value <= self.le) & (True if self.lt is None else value < self.lt)

    def describe(self, side: Optional[str] = None) -> str:
        """``positive``, ``not negative``, ``in [0, 1)``, ``at most 5``, ... (with ``what`` in front);
        ``side`` ``low``/``high``: that bound alone."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        low, high = (None if side == "high" else low), (None if side == "low" else high)
        if low and high:
            text = f"in {low[0]}{_show(low[1])}, {_show(high[0])}{high[1]}"
        elif low:
            text = {("(", 0): "positive", ("[", 0): "not negative"}.get(
                low, f"{'at least' if low[0] == '[' else 'more than'} {_show(low[1])}")
        elif high:
            text = f"{'at most' if high[1] == ']' else 'less than'} {_show(high[0])}"
        else:
            text = "a finite number"
        extras = " or ".join(_show(a) for a in self.also)
        text = f"{extras} or {text}" if extras else text
        if not self.what:
            return text
        bounded = text.startswith(("in ", "at ", "less ", "more ", "0 "))
        return f"{self.what} {text}" if bounded else f"{text} ({self.what})"


@dataclass(frozen=True)
class Length:
    """A list of exactly ``count`` items, or of at most ``most``."""

    count: Optional[int] = None
    most: Optional[int] = None

    def problem(self, value: Any) -> Optional[str]:
        if not isinstance(value, (list, tuple)):
            return None
        if self.count is not None and len(value) != self.count:
            return f"expected {self.count} items, got {len(value)}"
        if self.most is not None and len(value) > self.most:
            return f"at most {self.most:,} items, got {len(value):,}"
        return None


def _show(value: Any) -> str:
    """2, 0.5, 1e+308, 4,294,967,295: short, and a large count readable."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:g}"
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10**6 else str(value)


# Ranges used by many fields.
POSITIVE = Range(gt=0)
NOT_NEGATIVE = Range(ge=0)
PROBABILITY = Range(gt=0, lt=1)  # a confidence or interval level
SEED = Range(ge=0, le=SEED_MAX)
# Resamples of a bootstrap: none, or enough that an interval has tails (1 resample gives a zero-width "95 %" one).
BOOTSTRAP = Range(ge=10, also=(0,))

PositiveInt = Annotated[int, POSITIVE]
NonNegativeInt = Annotated[int, NOT_NEGATIVE]
PositiveFloat = Annotated[float, POSITIVE]
SeedInt = Annotated[int, SEED]
Bootstrap = Annotated[int, BOOTSTRAP]
Threads = Annotated[int, Range(ge=1, le=MAX_THREADS)]  # torch CPU threads (train.threads, --threads)


def constraints(tp: Any) -> tuple[Any, list]:
    """``(base type, [Range/Length, ...])`` of a possibly ``Annotated`` type."""
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        return base, [e for e in extras if isinstance(e, (Range, Length))]
    return tp, []


def value_problem(tp: Any, value: Any) -> Optional[tuple[str, str]]:
    """``(where, why)`` when ``value`` (already of ``tp``'s base type) breaks a declared constraint, else None:
    ``where`` is ``""`` or the item (``[1]``) of a list. Through ``Optional`` and lists; plain floats must
    be finite and plain integers fit 64 bits, declared or not."""
    if get_origin(tp) in _UNIONS:
        if value is None:
            return None
        members = [a for a in get_args(tp) if a is not type(None) and _accepts(a, value)]
        return value_problem(members[0], value) if members else None
    base, checks = constraints(tp)
    for check in checks:
        why = check.problem(value)
        if why:
            return "", why
    if get_origin(base) is list and isinstance(value, list):
        for i, item in enumerate(value):
            problem = value_problem(get_args(base)[0], item)
            if problem:
                return f"[{i}]{problem[0]}", problem[1]
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "", f"must be a finite number, got {value}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
        return "", f"too large: at most {INT_MAX:,} (2^63 - 1), got {value:.3g}"
    return None


_UNIONS = (typing.Union, types.UnionType)


def _accepts(tp: Any, value: Any) -> bool:
    base = constraints(tp)[0]
    origin = get_origin(base) or base
    return origin is Any or (isinstance(origin, type) and isinstance(value, origin)) or (
        origin is float and isinstance(value, int))


def check_fields(obj: Any, label: Callable[[str], str] = str) -> None:
    """Check a dataclass made in Python (not read from a file) against its fields' declared ranges;
    raises ConfigError naming ``label(field)`` for the first value out of range."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        problem = value_problem(hints[f.name], getattr(obj, f.name))
        if problem:
            raise ConfigError(f"{label(f.name)}{problem[0]}: {problem[1]}")


# ---------------------------------------------------------------- the one YAML loader


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key: PyYAML's own error says so
            break
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


class DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"line {line}: key {key!r} given twice (first on line {first}; YAML would keep the last)")


MAX_YAML_VALUES = 1_000_000  # a config, task file, manifest or mapping holds far fewer; aliases can fake billions


def _expands_beyond(tree: Any, limit: int) -> bool:
    """Does ``tree`` hold more than ``limit`` values once aliases are expanded (a "billion laughs" file)?"""
    stack, seen = [tree], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node
    return False


def load_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML text, refusing duplicate keys and alias bombs; errors are ConfigErrors naming ``source``
    (and the line)."""
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())  # PyYAML's reader errors span lines
        raise ConfigError(f"{source}:{where} malformed YAML: {why}") from None
    if _expands_beyond(tree, MAX_YAML_VALUES):
        raise ConfigError(f"{source}: holds more than {MAX_YAML_VALUES:,} values once its aliases are expanded")
    return tree
