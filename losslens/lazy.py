"""Package attributes imported on first use, so that importing a package costs nothing until used."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``where[name]`` (a module path) the first time ``name`` is read."""

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def load_entry(entry: str) -> Any:
    """The object a registry entry ``"package.module:name"`` names, imported now: plug-ins (the demo's
    corpus and tasks, a third party's) are registered by name, so the stage that calls them imports none."""
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)
