"""The layout's rules, read from the source: no import circles, and the library never reaches up to Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pokevq", "flows", "tasks", "deployments")
# The command-line face runs the flows and the stack: the one part of `pokevq` allowed to reach up.
FACE = "pokevq.cli"
ORCHESTRATION = ("prefect", "prefect_aws", "flows", "tasks", "deployments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module this file imports, at any depth of the file (a lazy import counts too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in modules)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {imp for imp in _imports(path, modules) if imp in modules and imp != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_orchestrator() -> None:
    modules = _modules()
    offenders = {}
    for name, path in modules.items():
        if not name.startswith("pokevq") or name == FACE or name.startswith(FACE + "."):
            continue
        bad = sorted(imp for imp in _imports(path, modules) if imp.split(".")[0] in ORCHESTRATION)
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_tasks_and_flows_stay_above_the_library() -> None:
    """Tasks never import flows; the library's face is the only way down from the command line."""
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("tasks"):
            assert not any(imp.split(".")[0] in ("flows", "deployments") for imp in _imports(path, modules)), name
