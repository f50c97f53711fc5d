"""Harness names resolved into the sweep's units, each fingerprinted (part of :mod:`losslens.evaluate.harness`).

A task, or a group with aggregate metrics, is one unit; a tag, or a group without them, one unit per
task. The fingerprint covers the lm-eval version, the resolved YAML configs of the unit and its members,
the ``*.py`` helpers beside them, the bytes of local data files, and the settings that change numbers.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from losslens.errors import DataError

SCORER = "losslens-2"  # how harness units are answered (losslens' scorer, continuous metrics): in fingerprints


# A TaskManager indexes YAML files when it is made: the include folder alone takes a moment,
# lm-eval's ~14,000 built-in files some 15 s, so they are indexed only for names not found locally.
def task_manager(names: list[str], include: Optional[Path], version: str, log: Callable[[str], None]):
    """lm-eval's TaskManager that knows every name: the include folder's alone where it is enough."""
    from lm_eval.tasks import TaskManager

    local_index: dict = {}
    if include is not None:
        local = TaskManager(include_path=str(include), include_defaults=False)
        if all(members(local.task_index, n) is not None for n in names):
            return local
        local_index = local.task_index
    # Cheap first: a name that no built-in YAML file mentions cannot be a built-in task.
    for name in not_in_builtin_yaml([n for n in names if n not in local_index]):
        raise unknown(name, include, version)
    log(f"lm-eval: indexing lm-eval {version}'s built-in tasks (takes some seconds)")
    manager = TaskManager(include_path=str(include) if include else None)
    for name in names:
        if name not in manager.task_index:
            raise unknown(name, include, version)
        if members(manager.task_index, name) is None:
            where = f" nor in {include}" if include else ""
            raise DataError(f"--lm-eval: {name}: lists a task that is not built into lm-eval {version}{where}")
    return manager


def unknown(name: str, include: Optional[Path], version: str) -> DataError:
    where = f"in {include} nor " if include else ""
    hint = "" if include else " (give --lm-eval-include DIR for task YAMLs of your own)"
    return DataError(f"--lm-eval: unknown task {name!r}: not a task, group or tag {where}"
                     f"of lm-eval {version}{hint}")


def units(index: dict, name: str) -> list[str]:
    """A task, or a group with aggregate metrics, is one unit; a tag, or a group without them, one per task."""
    entry = index[name]
    if entry.kind.name == "TAG" or (entry.kind.name == "GROUP" and not entry.cfg.get("aggregate_metric_list")):
        return sorted({e.name for e in members(index, name) or [] if e.kind.name in ("TASK", "PY_TASK")})
    return [name]


def fingerprint(index: dict, name: str, version: str, settings: dict) -> tuple[tuple[str, ...], str]:
    """A unit's harness tasks (itself, or a group's members) and its fingerprint (the module docstring)."""
    if "/" in name or name.startswith("."):  # it names a file under RUN_DIR/evals/
        raise DataError(f"--lm-eval: {name!r}: task names with '/' or a leading '.' cannot be results files")
    entries = members(index, name) or []
    leaves = tuple(e.name for e in entries if e.kind.name in ("TASK", "PY_TASK"))
    h = hashlib.sha256(json.dumps({"lm_eval": version, "settings": settings, "scorer": SCORER},
                                  sort_keys=True).encode())
    for entry in sorted(entries, key=lambda e: e.name):
        _hash_entry(h, entry)
    return leaves, h.hexdigest()[:16]


def members(index: dict, name: str, seen: Optional[set] = None) -> Optional[list]:
    """The index entries behind ``name``: itself and, for a group or tag, its members, recursively.

    None when the name or one of its members is not in the index.
    """
    seen = set() if seen is None else seen
    entry = index.get(name)
    if entry is None:
        return None
    if name in seen:
        return []
    seen.add(name)
    out = [entry]
    if entry.kind.name == "TAG":
        children = sorted(entry.tags)
    elif entry.kind.name == "GROUP":
        children = list(_group_children(entry.cfg or {}, index))
    else:
        children = []
    for child in children:
        found = members(index, child, seen)
        if found is None:
            return None
        out += found
    return out


def _group_children(cfg: dict, index: dict) -> Iterator[str]:
    """Names a group config refers to. Inline task configs are part of the group's own config."""
    items = cfg.get("task", [])
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict) and "group" in item:
            yield from _group_children(item, index)
        elif isinstance(item, dict) and item.get("task") in index:  # a registered task with overrides
            yield item["task"]


def check_disjoint(tasks: list) -> None:
    """Refuse a harness task in two units (each unit has ``name`` and ``leaves``)."""
    # lm-eval refuses a task requested twice (alone and in a group, or in two groups).
    owner: dict[str, str] = {}
    for t in tasks:
        for leaf in t.leaves:
            if leaf in owner and owner[leaf] != t.name:
                raise DataError(f"--lm-eval: task {leaf!r} is in both {owner[leaf]!r} and {t.name!r}: name one of them")
            owner[leaf] = t.name


def not_in_builtin_yaml(names: list[str]) -> list[str]:
    """The names that appear in none of lm-eval's built-in task YAML files (one pass over them)."""
    import lm_eval.tasks

    left = {n: n.encode() for n in names}
    for path in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml"):
        if not left:
            break
        text = path.read_bytes()
        left = {n: b for n, b in left.items() if b not in text}
    return list(left)


def _hash_entry(h, entry) -> None:
    """A task's identity: its YAML config with includes resolved, helper modules beside it, local data files."""
    text = json.dumps(entry.cfg, sort_keys=True, default=str)
    if entry.yaml_path is not None:
        folder = Path(entry.yaml_path).parent
        text = text.replace(str(folder), "<task dir>")  # !function references: the same task wherever it lives
        for helper in sorted(folder.glob("*.py")):
            h.update(helper.name.encode() + helper.read_bytes())
    h.update(entry.name.encode() + text.encode())
    for path in _data_files(entry.cfg or {}):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)


def _data_files(cfg: dict) -> list[Path]:
    """Local files a task reads: ``dataset_kwargs.data_files`` (paths or globs) and a local ``dataset_path``.

    Relative paths are taken from the working directory, as the ``datasets`` library does.
    """
    kwargs = cfg.get("dataset_kwargs") or {}
    specs = kwargs.get("data_files") or []
    if isinstance(specs, dict):
        specs = list(specs.values())
    specs = [specs] if isinstance(specs, str) else list(specs)
    flat = [s for spec in specs for s in ([spec] if isinstance(spec, str) else list(spec))]
    found: list[Path] = []
    for spec in flat:
        found += [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
    dataset_path = cfg.get("dataset_path")
    if isinstance(dataset_path, str) and Path(dataset_path).expanduser().exists():
        local = Path(dataset_path).expanduser()
        found += [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    return [p for p in found if p.is_file()]
