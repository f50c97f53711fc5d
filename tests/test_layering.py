"""The import layering of docs/architecture.md, read statically from every ``import`` in ``losslens/``
(function-level lazy imports included): Face -> Config -> stages -> Core, stages apart, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "losslens"
STAGES = ("train", "evaluate", "analyze", "demo")
FACE = {"losslens.cli", "losslens.__main__", "losslens.pipeline", "losslens.adaptive_judge",
        *(f"losslens.{s}.cli" for s in STAGES)}
CONFIG = {"losslens.config", "losslens.study_dir", *(f"losslens.{s}.config" for s in STAGES)}
# What a stage may take from the top-level losslens.config: the study record it runs, not schema helpers
# (those are Core: losslens.records).
STUDY_RECORD = {"StudyConfig", "load_study", "study_from_dict"}
# The importers write a study folder that evaluate and analyze read: a stage of their own.
IMPORTERS = {"losslens.external", "losslens.import_results", "losslens.import_wide"}

# (importer, imported) -> why it is allowed for now. Each is a known debt, not a pattern to copy.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(mod: str) -> str:
    if mod in FACE:
        return "face"
    if mod in CONFIG:
        return "config"
    if mod in IMPORTERS:
        return "stage:import"
    parts = mod.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return f"stage:{parts[1]}"
    return "core"


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def imports(mod: str) -> list[tuple[str, tuple[str, ...], int, bool]]:
    """(imported module, names taken from it, line, only under TYPE_CHECKING) for each losslens import."""
    path = MODULES[mod]
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = typing_only or (isinstance(child, ast.If) and _type_checking_only(child))
            if isinstance(child, ast.Import):
                found.extend((a.name, (), child.lineno, typing_only) for a in child.names
                             if a.name.split(".")[0] == "losslens")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                if base.split(".")[0] != "losslens":
                    continue
                for a in child.names:  # "from losslens import contracts" imports the module losslens.contracts
                    sub = f"{base}.{a.name}"
                    found.append((sub, (), child.lineno, typing_only) if sub in MODULES
                                 else (base, (a.name,), child.lineno, typing_only))
            visit(child, guarded)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(target, names, line, t) for target, names, line, t in found if target in MODULES]


def problem(mod: str, target: str, names: tuple[str, ...]) -> str | None:
    """Why ``mod`` may not import ``names`` from ``target``, or None."""
    src, dst = layer(mod), layer(target)
    if src == "face" or src == dst and src != "core" and target != "losslens.config":
        return None
    if dst == "face":
        return "imports the face"
    if src == "core" and dst != "core":
        return f"Core imports {dst.replace('stage:', 'the stage ')}"
    if src == "config" and dst.startswith("stage"):
        return f"config imports {dst.replace('stage:', 'the stage ')}"
    if src.startswith("stage") and dst.startswith("stage"):
        return f"{src.replace('stage:', 'the stage ')} imports {dst.replace('stage:', 'the stage ')}"
    if target == "losslens.config" and mod not in ("losslens.config",):
        extra = set(names) - STUDY_RECORD if names else {"the module"}
        if extra or layer(mod) == "core":
            return f"takes {', '.join(sorted(extra))} from losslens.config (schema helpers: losslens.records)"
    return None


def violations() -> list[str]:
    out = []
    for mod in MODULES:
        for target, names, line, _ in imports(mod):
            why = problem(mod, target, names)
            said = f"{MODULES[mod].relative_to(ROOT.parent)}:{line}: {target}: {why}"
            if why and (mod, target) not in ALLOWED and said not in out:
                out.append(said)
    return out


def cycles() -> list[list[str]]:
    """Import cycles among losslens modules (Tarjan's strongly connected components); type-only imports aside."""
    graph = {m: sorted({t for t, _, _, typing_only in imports(m) if not typing_only and t != m}) for m in MODULES}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in graph:
        if m not in index:
            connect(m)
    return found


def allowed_cycle(component: list[str]) -> bool:
    return any(a in component and b in component for a, b in ALLOWED)


def test_every_import_follows_the_layering():
    assert violations() == []


def test_no_import_cycle_in_losslens():
    assert [c for c in cycles() if not allowed_cycle(c)] == []


@pytest.mark.parametrize("source, target, names", [
    ("losslens.evaluate.adaptive", "losslens.analyze.threshold", ()),  # evaluation imports analysis
    ("losslens.argtypes", "losslens.evaluate.config", ()),  # Core imports a stage's config
    ("losslens.import_results", "losslens.evaluate.harness", ()),  # for metric_name
    ("losslens.external", "losslens.train.model", ()),  # for flops_per_token
    ("losslens.evaluate.tasks", "losslens.demo.tasks", ()),  # the demo plugs in by registry entry
    ("losslens.evaluate.tasks", "losslens.config", ("build_dataclass",)),  # schema helpers are Core
    ("losslens.train.tokenizer", "losslens.config", ("MAX_VOCAB",)),
    ("losslens.metrics", "losslens.train.loop", ()),
    ("losslens.import_results", "losslens.analyze.table", ()),  # the table reader is Core: results_reader
])
def test_the_imports_issue_22_removed_would_be_refused(source, target, names):
    assert problem(source, target, names)


def test_what_the_layering_allows():
    assert problem("losslens.pipeline", "losslens.analyze.threshold", ()) is None  # the face sees everything
    assert problem("losslens.train.loop", "losslens.config", ("StudyConfig",)) is None  # the study record
    assert problem("losslens.evaluate.sweep", "losslens.fsio", ()) is None  # Core
    assert problem("losslens.config", "losslens.train.config", ()) is None


def test_the_reader_sees_lazy_and_type_only_imports():
    found = {(t, n, typing_only) for t, n, _, typing_only in imports("losslens.adaptive_judge")}
    assert ("losslens.analyze.threshold", ("find_threshold",), False) in found  # inside provisional_eta
    found = {(t, typing_only) for t, _, _, typing_only in imports("losslens.train.metrics_log")}
    assert ("losslens.train.loop", True) in found and ("losslens.metrics", False) in found
