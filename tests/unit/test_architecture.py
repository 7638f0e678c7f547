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


MAX_FUNCTION_LINES = 60  # a body a newcomer reads in one screen (the docstring and signature not counted)
LONG_BY_NATURE = ("pokevq.synth", "pokevq.cli.main.build_parser")  # tile art, scene scripts, the parser's table


def _long_functions(source: str, module: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
            body = body[1:]  # the docstring
        lines = body[-1].end_lineno - body[0].lineno + 1
        name = f"{module}.{node.name}"
        if lines > MAX_FUNCTION_LINES and not name.startswith(LONG_BY_NATURE):
            found.append(f"{name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_a_screen() -> None:
    long = [f for name, path in _modules().items() if not name.startswith("deployments")
            for f in _long_functions(path.read_text(), name)]
    assert long == []


def test_the_length_rule_sees_a_long_function() -> None:
    source = "def f():\n    '''Why.'''\n" + "    x = 1\n" * 61
    assert _long_functions(source, "pokevq.m") == ["pokevq.m.f (61 lines)"]
    assert _long_functions("def f():\n" + "    x = 1\n" * 60, "pokevq.m") == []


def _rank_tests(source: str) -> list[int]:
    """Lines that compare a rank or world size, or ask whether this process writes."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
                     for side in (node.left, *node.comparators) for n in ast.walk(side)}
            if names & {"rank", "world_size", "writes"}:
                lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and node.attr == "writes":
            lines.append(node.lineno)
    return lines


def test_the_training_loop_never_asks_which_rank_it_is() -> None:
    """Rank 0's writing lives in the sink (`sink.py`); the collectives (pokevq.dist) compare ranks for the rest."""
    offenders = [f"{path.name}:{line}" for path in sorted((ROOT / "pokevq" / "train").glob("*.py"))
                 if path.name != "sink.py" for line in _rank_tests(path.read_text())]
    assert offenders == []


def test_the_rank_rule_sees_a_rank_test() -> None:
    assert _rank_tests("if collectives.rank() == 0:\n    pass\nif self.writes:\n    pass\n") == [1, 3]
    assert _rank_tests("x = collectives.rank()\n") == []
