"""The house: arrows point one way (flows -> tasks -> batchpred), the library never imports
prefect, and inside the library there is no import cycle and no import of a library module
hidden inside a function (cli.py excepted: its lazy imports keep `batchpred --help` fast; and
scoring's import of validation, which keeps Great Expectations out of every score process's
start-up)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "batchpred"
LAZY_ALLOWED = {"batchpred.cli"}
LAZY_PAIRS = {"batchpred.scoring": {"batchpred.validation"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(folder: Path) -> dict[str, Path]:
    return {
        _module_name(p) if folder == SRC else ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for p in sorted(folder.rglob("*.py"))
    }


def _imports(tree: ast.Module, module: str) -> Iterator[tuple[str, ast.stmt, bool]]:
    """(imported name, statement, at module level) for every import of a module, names taken
    as fully as they are written (`from batchpred import db` gives `batchpred.db`)."""
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        top = id(node) not in nested
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node, top


def _library_target(name: str, known: set[str]) -> str | None:
    """The library module an imported name lands in: the longest known module prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _parsed(folder: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {m: (p, ast.parse(p.read_text(), str(p))) for m, p in _modules(folder).items()}


def _graph() -> dict[str, set[str]]:
    """Module-level imports among library modules (TYPE_CHECKING blocks counted too: a cycle
    there is still a cycle in the design)."""
    library = _parsed(SRC)
    known = set(library)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, (_, tree) in library.items():
        for name, _, top in _imports(tree, module):
            target = _library_target(name, known)
            if top and target is not None and target not in (module, "batchpred"):
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path back to its start) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:  # walk inside the group until a module repeats
            step = min(w for w in graph[path[-1]] if w in group)
            path.append(step)
            if step in seen:
                out.append(path[path.index(step) :])
                break
            seen.add(step)
    return out


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_among_library_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_library_module_imports_a_library_module_inside_a_function() -> None:
    library = _parsed(SRC)
    hidden = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
        for module, (path, tree) in library.items()
        if module not in LAZY_ALLOWED
        for name, node, top in _imports(tree, module)
        if not top
        and _library_target(name, set(library)) not in (None, *LAZY_PAIRS.get(module, ()))
    ]
    assert not hidden, "\n".join(hidden)


def test_the_library_never_imports_prefect_tasks_or_flows() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
        for module, (path, tree) in _parsed(SRC).items()
        for name, node, _ in _imports(tree, module)
        if name.split(".")[0] in ("prefect", "prefect_dask", "tasks", "flows")
    ]
    assert not wrong, "\n".join(wrong)


def test_tasks_never_import_flows() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
        for module, (path, tree) in _parsed(ROOT / "tasks").items()
        for name, node, _ in _imports(tree, module)
        if name.split(".")[0] == "flows"
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_imports_in_functions_and_relative_ones() -> None:
    tree = ast.parse(
        "import os\nfrom . import db\ndef f():\n    from batchpred import training\n"
        "class C:\n    def g(self):\n        import batchpred.stats\n"
    )
    seen = {(name, top) for name, _, top in _imports(tree, "batchpred.monitoring")}
    assert seen == {
        ("os", True),
        ("batchpred.db", True),
        ("batchpred.training", False),
        ("batchpred.stats", False),
    }


def test_flows_start_without_great_expectations() -> None:
    """Importing GX takes 2-4 s; a score, backfill or lookup process never needs it unless a
    partition was never validated, and an ingest or nightly run only when a day is to be
    validated, so none of them pays it at start-up."""
    code = (
        "import sys, flows.score, flows.ingest, flows.nightly, batchpred.cli, batchpred.api\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations')[:3])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
