"""Each layer only looks down: no module of edge_server or heavy_plugins imports, even lazily inside a function,
a module that imports it back (two circles were left: openapi <-> openapi_dialects, and in heavy_plugins
transformers_backend <-> vision)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(package: Path) -> dict[str, set[str]]:
    """{module: the modules of the same package it imports}, from the source (every import statement)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []
    for start in sorted(graph):
        stack = [[start]]
        while stack:
            path = stack.pop()
            for after in graph[path[-1]]:
                if after == start:
                    found.append(path + [start])
                elif after not in path and after > start:  # each circle once, from its smallest module
                    stack.append(path + [after])
    return found


@pytest.mark.parametrize("package", ["edge_server", "heavy_plugins/heavy_plugins"])
def test_no_import_circles(package):
    graph = imports(ROOT / package)
    assert len(graph) > 5  # the package was read
    assert circles(graph) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
