"""argparse ``type=`` functions: a bad flag value is refused while parsing, naming the flag (exit 2).

argparse prefixes the message with ``argument --flag:``, so these say only what is wrong.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, get_args, get_origin

from losslens.schema import constraints, value_problem


def flag_name(field_name: str) -> str:
    """The flag that sets a field of an options record: ``ci_level`` -> ``--ci-level``."""
    return "--" + field_name.replace("_", "-")


def flag(cls: type, name: str) -> Callable[[str], Any]:
    """The ``type=`` of a flag that sets field ``name`` of dataclass ``cls``: the text read as the field's
    number type (or a comma-separated list of them) and checked against the range declared there, so a
    flag and its config field accept the same values."""
    return of_type(typing.get_type_hints(cls, include_extras=True)[name], name)


def of_type(tp: Any, name: str = "value") -> Callable[[str], Any]:
    """The ``type=`` of a flag whose values are those of ``tp``, e.g. ``losslens.schema.Threads``."""
    if get_origin(tp) is typing.Union:  # Optional[X]: a flag given has a value
        tp = next(a for a in get_args(tp) if a is not type(None))
    base = constraints(tp)[0]
    item = constraints(get_args(base)[0])[0] if get_origin(base) is list else base

    def parse(text: str) -> Any:
        try:
            value = [item(v) for v in text.split(",") if v.strip()] if item is not base else base(text)
        except ValueError:
            many = "comma-separated numbers" if item is not base else ("an integer" if base is int else "a number")
            raise argparse.ArgumentTypeError(f"expected {many}, got {text!r}") from None
        problem = value_problem(tp, value)
        if problem:
            item_number = f"item {int(problem[0][1:-1]) + 1}: " if problem[0] else ""
            raise argparse.ArgumentTypeError(item_number + problem[1])
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def positive_int(text: str) -> int:
    return _positive(text, int, "integer")


def positive_float(text: str) -> float:
    return _positive(text, float, "number")


def _positive(text: str, parse, what: str):
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive {what}, got {text.strip()}")
    return value


_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only if this machine has it."""
    m = _DEVICE_RE.match(text)
    if not m or (m.group(1) == "cpu" and m.group(2)):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (use cpu, cuda, cuda:N or mps)")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "cpu":
        return text
    import torch

    if kind == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("mps is not available on this machine")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " built without CUDA")
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device on this machine ({build}); use cpu")
        if index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return text


def output_dir(text: str) -> Path:
    """A folder to write into: it may not exist yet, but it must not be a file, and must be writable."""
    problem = unwritable_folder(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def unwritable_folder(path: Path) -> str | None:
    """Why ``path`` cannot be (created and) written as a folder, or None when it can."""
    existing = next((p for p in [path, *path.absolute().parents] if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{path} is a file, not a folder" if existing == path else f"{path}: {existing} is a file, not a folder"
    try:  # a real probe: os.access says yes to root on a read-only file system
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        return f"{path}: cannot write in {existing} ({e.strerror})"
    return None

def shard(text: str) -> tuple[int, int]:
    """``I/N`` (0 <= I < N), or ``slurm``: this job array task's part, from SLURM's environment."""
    if text == "slurm":
        return slurm_shard(os.environ)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N counting from 0 (e.g. 0/4), or slurm; got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text}: need 0 <= I < N (parts count from 0: 0/{max(n, 1)} is the first)")
    return i, n


_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")


def slurm_shard(env) -> tuple[int, int]:
    """(i, n) of a SLURM job array task: ``--array=1-8`` gives tasks 1..8, i.e. parts 0/8 ... 7/8.

    Arrays with a step (``--array=0-15:4``) are not contiguous, so their task ids cannot be turned into
    parts; they are refused.
    """
    missing = [k for k in _SLURM if k not in env]
    if missing:
        raise argparse.ArgumentTypeError(f"slurm: {', '.join(missing)} not set (not inside a SLURM job array?)")
    try:
        task, first, count = (int(env[k]) for k in _SLURM)
    except ValueError:
        raise argparse.ArgumentTypeError(f"slurm: {', '.join(f'{k}={env[k]!r}' for k in _SLURM)} are not integers") from None
    top = int(env.get("SLURM_ARRAY_TASK_MAX", first + count - 1))
    if count <= 0 or top != first + count - 1 or not first <= task <= top:
        raise argparse.ArgumentTypeError(
            f"slurm: task {task} of an array {first}-{top} with {count} tasks is not a contiguous range; "
            f"use --shard I/N")
    return task - first, count
