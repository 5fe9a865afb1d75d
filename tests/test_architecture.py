"""The import graph of ``lightning_sdc`` (``docs/architecture.md``): no module imports one that imports it back,
directly or around a loop, and every import between rooms goes down the layers. Imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_sdc

ROOT = Path(lightning_sdc.__file__).parent

#: room (top-level module or package under lightning_sdc) -> layer; a room imports only rooms of lower layers
LAYERS = {
    "registry": 0, "io": 0, "signals": 0, "progress": 0, "checks": 0,
    "data": 1, "models": 1, "augment": 1, "matching": 1, "fabric_jobs": 1, "figures": 1,
    "training": 2, "synthetic": 2, "theory": 2,
    "evaluation": 3, "difficulty": 3, "runs": 3,
    "experts": 4, "coresets": 4, "cost": 4,
    "methods": 5,
    "callbacks": 6,
    "lightning_cli": 7,
    "compare": 8, "demo": 8, "experiments": 8, "gradn_curve": 8,
    "cli": 9,
    "__main__": 10,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.startswith("lightning_sdc.")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                if base.split(".")[0] == "lightning_sdc":
                    targets |= {known(f"{base}.{a.name}") for a in node.names}
        graph[name] = targets - {name, "lightning_sdc"}
    return graph


def room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_every_room_has_a_layer_and_imports_go_down():
    graph = import_graph()
    rooms = {room(m) for m in graph} - {"lightning_sdc"}
    assert rooms <= set(LAYERS), f"rooms without a layer in LAYERS and docs/architecture.md: {sorted(rooms - set(LAYERS))}"
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if room(a) != room(b) and room(a) != "lightning_sdc" and LAYERS[room(b)] >= LAYERS[room(a)])
    assert upward == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    graph = {"lightning_sdc.a": {"lightning_sdc.b"}, "lightning_sdc.b": {"lightning_sdc.a"}, "lightning_sdc.c": set()}
    assert cycles(graph) == [["lightning_sdc.a", "lightning_sdc.b"]]
    real = import_graph()
    assert "lightning_sdc.data.registry" in real["lightning_sdc.data"] or real["lightning_sdc.data"]
    assert any(room(b) == "io" for b in real["lightning_sdc.synthetic"])
