"""Paths written in a file (a study config, study.yaml, a manifest) or given on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def local_path(path: Optional[str | Path], base: str | Path) -> Optional[Path]:
    """``path`` as given if it is absolute or exists from the working directory, else relative to ``base``
    (the folder of the file that names it); None for no path. A path found nowhere comes back under
    ``base``, so that the error about it says where it was looked for."""
    if not path:
        return None
    path = Path(path)
    return path if path.is_absolute() or path.exists() else Path(base) / path
