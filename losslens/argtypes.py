"""argparse ``type=`` functions: a bad flag value is refused while parsing, naming the flag (exit 2).

argparse prefixes the message with ``argument --flag:``, so these say only what is wrong.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
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
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    existing = next((p for p in [path, *path.absolute().parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if existing is not None:
        try:  # a real probe: os.access says yes to root on a read-only file system
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"{text}: cannot write in {existing} ({e.strerror})") from None
    return path

