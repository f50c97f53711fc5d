"""An output never replaces an input: a path a command writes may not be, hold, or lie inside a path it reads.

Checked after the inputs are known and before anything is written, so that ``import-results MAP.yaml
--out MAP.yaml`` (or ``--out`` naming one of the result files it reads) is refused instead of
overwriting the file it came from. Paths are compared after resolving symbolic links, and an existing
path by identity (a hard link is the same file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from losslens.errors import LossLensError


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return a.resolve() == b.resolve()


def _overlap(output: Path, given: Path) -> str | None:
    """How ``output`` overlaps ``given`` (an input), or None."""
    out, inp = output.resolve(), given.resolve()
    if _same(output, given):
        return "is"
    if inp.is_relative_to(out):
        return "holds"
    if out.is_relative_to(inp):
        return "is inside"
    return None


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike],
                              flag: str) -> None:
    """Raise (naming ``flag`` and both paths) when an output is, holds or is inside an input."""
    inputs = [Path(i) for i in inputs]
    for output in map(Path, outputs):
        for given in inputs:
            how = _overlap(output, given)
            if how:
                raise LossLensError(f"{flag}: {output} {how} the input {given}, which would be overwritten; "
                                    f"write elsewhere")
