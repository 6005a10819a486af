"""The package's import graph: no cycles anywhere, and the config schema names nothing above it.

Every import statement of every module counts, function-level and ``TYPE_CHECKING`` ones included: a lazy import
hides a cycle from the interpreter, not from a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ssdistill"


def _module_name(path: Path) -> str:
    parts = ["ssdistill", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts as a.b when that is a module, else a)."""
    path = MODULES[name]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found | _parents(found, name)


def _parents(imported: set[str], importer: str) -> set[str]:
    """Importing ``a.b.c`` first runs the package files ``a.b`` (and ``a``): those are imported too. The root package
    is left out: ``ssdistill/__init__`` is the public facade, which imports only ``_version`` at module level and the
    API inside its functions (``test_the_root_package_imports_only_the_version_at_module_level``)."""
    parents = set()
    for module in imported:
        parts = module.split(".")
        parents |= {".".join(parts[:i]) for i in range(2, len(parts))}
    return {p for p in parents if p in MODULES and p != importer}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports():
    assert "ssdistill.api" in GRAPH["ssdistill"]  # ssdistill/__init__ imports the API lazily, inside functions
    assert "ssdistill.methods.registry" in GRAPH["ssdistill.recipe"]


def test_no_import_cycle_in_the_package():
    assert _cycles(GRAPH) == []


def test_package_files_count_as_imported_with_their_modules():
    # a package file that imports its own modules would close a cycle with every module that imports a sibling
    assert "ssdistill.methods" in GRAPH["ssdistill.methods.bingo"]  # bingo imports methods.paired / queued
    planted = {**GRAPH, "ssdistill.methods": GRAPH["ssdistill.methods"] | {"ssdistill.methods.bingo"}}
    assert _cycles(planted), "a package file importing a module that imports a sibling is a cycle"


def test_the_root_package_imports_only_the_version_at_module_level():
    tree = ast.parse(MODULES["ssdistill"].read_text())
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert [getattr(node, "module", None) for node in top] == ["ssdistill._version"]


@pytest.mark.parametrize("low", ["ssdistill.config", "ssdistill.files", "ssdistill.errors", "ssdistill._version", "ssdistill.labels"])
def test_the_lowest_floors_import_nothing_above_them(low):
    allowed = {
        "ssdistill.config": {"ssdistill.errors", "ssdistill.labels"},
        "ssdistill.files": set(),
        "ssdistill.errors": set(),
        "ssdistill._version": set(),
        "ssdistill.labels": set(),
    }
    assert GRAPH[low] <= allowed[low], f"{low} imports {sorted(GRAPH[low] - allowed[low])}"


def test_config_names_nothing_from_the_methods():
    text = MODULES["ssdistill.config"].read_text()
    assert "ssdistill.methods" not in text and not any(m.startswith("ssdistill.methods") for m in GRAPH["ssdistill.config"])


# The floors of the package, top down: a module may import modules of its own floor and of the floors below, never one
# above (CONTRIBUTING.md, "The floors"). A room is a top-level module or sub-package of ssdistill.
FLOORS = (
    ("ssdistill", "ssdistill.cli", "ssdistill.__main__"),  # the command line and the root facade
    ("ssdistill.api", "ssdistill.export"),  # the Python API, the timm export
    ("ssdistill.runs",),  # a run assembled, trained, evaluated, read back
    ("ssdistill.recipe",),  # YAML + key=value -> config, dispatching on the method
    ("ssdistill.methods", "ssdistill.report"),  # the methods and the HTML report
    ("ssdistill.engine",),  # what methods stand on: the method base class, provider, trainer, trackers
    ("ssdistill.cache", "ssdistill.eval", "ssdistill.modelcard", "ssdistill.export_config"),
    ("ssdistill.models",),
    ("ssdistill.data",),
    ("ssdistill.config", "ssdistill.losses"),
    ("ssdistill.files", "ssdistill.distributed", "ssdistill.errors", "ssdistill._version", "ssdistill.labels"),  # the ground floor
)


def room(module: str) -> str:
    return module if module == "ssdistill" else ".".join(module.split(".")[:2])


def floor(module: str) -> int:
    """0 for the top floor, growing downwards."""
    return next(i for i, rooms in enumerate(FLOORS) if room(module) in rooms)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` that runs back up a floor, as 'importer -> imported'."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if floor(b) < floor(a))


def test_every_module_has_a_floor():
    assert [m for m in MODULES if not any(room(m) in rooms for rooms in FLOORS)] == []


def test_no_import_runs_back_up_a_floor():
    assert upward_imports(GRAPH) == []


def test_an_import_that_runs_back_up_is_found():
    planted = {**GRAPH, "ssdistill.engine.provider": GRAPH["ssdistill.engine.provider"] | {"ssdistill.methods.registry"}}
    assert upward_imports(planted) == ["ssdistill.engine.provider -> ssdistill.methods.registry"]
    planted = {**GRAPH, "ssdistill.labels": {"ssdistill.runs.train"}}
    assert upward_imports(planted) == ["ssdistill.labels -> ssdistill.runs.train"]
