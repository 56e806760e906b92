"""Dependencies point one way, ``benchmark -> models -> simgen``, and no two modules import each other.

Every import of every module of the three packages is read with :mod:`ast`, including imports inside
functions (a late import is still a dependency: it only hides it from readers). The checks:

- an import against the layers fails: ``simgen`` importing ``models``, ``benchmark`` or torch;
  ``models`` importing ``benchmark``;
- a cycle between modules fails (a strongly connected component of more than one module, or a
  module importing itself).

``from pkg.mod import name`` is an edge to ``pkg.mod``; ``from pkg import sub`` is an edge to
``pkg.sub`` when ``sub`` is a module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("simgen", "models", "benchmark")
# The layer each package sits on; a package may import only packages on a lower layer (or itself).
LAYER = {"simgen": 0, "models": 1, "benchmark": 2}
# Third-party packages a layer must never import.
FORBIDDEN_THIRD_PARTY = {"simgen": ("torch", "torch_geometric")}
# Cycles known and owned by another branch, each with the reason; empty when there are none.
KNOWN_CYCLES: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module name (ours or third-party top level) that ``name`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return found


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative), restricted to the graph's own nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root] & graph.keys())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & graph.keys()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def test_the_graph_sees_late_imports():
    """The parser finds imports inside functions and resolves ``from pkg import module``."""
    graph = _graph()
    assert len(graph) > 40
    # simgen/sample.py imports its pipeline modules inside simulate_sample.
    assert {"simgen.physics.imaging", "simgen.physics.noise", "simgen.structures"} <= graph["simgen.sample"]


def test_no_import_against_the_layers():
    wrong = []
    for module, imported in sorted(_graph().items()):
        package = module.split(".")[0]
        for target in sorted(imported):
            top = target.split(".")[0]
            if top in LAYER and LAYER[top] > LAYER[package]:
                wrong.append(f"{module} imports {target}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, ()):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against benchmark -> models -> simgen:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    cycles += [{m} for m, imported in graph.items() if m in imported]
    unexpected = [sorted(c) for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    assert not unexpected, "import cycles between modules:\n" + "\n".join(map(str, unexpected))


def _store_imports() -> list[tuple[str, str, str]]:
    """(module, imported module, name) of every ``from simgen.store[...] import name`` in
    ``models`` and ``benchmark`` (``import simgen.store...`` counts with name ``*``)."""
    found = []
    for name, path in sorted(_modules().items()):
        if name.split(".")[0] == "simgen":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simgen.store"):
                found += [(name, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [
                    (name, alias.name, "*")
                    for alias in node.names
                    if alias.name.startswith("simgen.store")
                ]
    return found


def test_models_and_benchmark_read_stores_only():
    """``models`` and ``benchmark`` use the store's reader API, never its writer or verifier."""
    from simgen.store import reader

    found = _store_imports()
    assert found, "expected models/benchmark to read stores through simgen.store"
    wrong = [
        f"{module} imports {name} from {target}"
        for module, target, name in found
        if target not in ("simgen.store", "simgen.store.reader") or name not in reader.__all__
    ]
    assert not wrong, "imports of the store beyond its reader API:\n" + "\n".join(wrong)


def _private_imports() -> list[str]:
    """``from pkg.mod import _name`` or an import of ``pkg._mod`` across our packages."""
    found = []
    for name, path in sorted(_modules().items()):
        package = name.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                targets = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [(alias.name, "") for alias in node.names]
            else:
                continue
            for module, imported in targets:
                parts = module.split(".")
                if parts[0] not in LAYER or parts[0] == package:
                    continue
                if imported.startswith("_") or any(p.startswith("_") for p in parts[1:]):
                    found.append(f"{name} imports {module}.{imported}".rstrip("."))
    return found


def test_no_private_imports_across_packages():
    """A package uses another's public names only: an underscore name is that package's own."""
    wrong = _private_imports()
    assert not wrong, "private names imported across packages:\n" + "\n".join(wrong)


def test_the_private_import_check_sees_a_violation(tmp_path, monkeypatch):
    bad = tmp_path / "models" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from simgen.physics.imaging import _validate_atoms\nimport simgen.reconstruction._sparse\n")
    monkeypatch.setattr(
        __import__(__name__, fromlist=["_modules"]), "_modules", lambda: {"models.bad": bad}
    )
    assert _private_imports() == [
        "models.bad imports simgen.physics.imaging._validate_atoms",
        "models.bad imports simgen.reconstruction._sparse",
    ]
