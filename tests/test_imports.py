"""No import cycle anywhere in the package, lazy (function-level) imports included.

The graph is built with ``ast`` from the sources of ``coreaug_fast/`` and ``kernels/``
(installed as ``coreaug_fast.kernels``), so it also sees imports that only run inside a
function. Nodes are modules; a package's node is its ``__init__``. An edge A → B means A's
source contains an import that executes B:

* ``import p.q.r`` and ``from p.q import r`` (r a submodule) → ``p.q.r``;
* ``from p.q import name`` (name not a submodule) → ``p.q`` (its ``__init__``);
* relative imports (``from . import x``, ``from ..m import y``) are resolved first.

What does not count: the implicit initialisation of parent packages that Python performs
before a submodule. A submodule runs while its parent package may still be initialising,
and Python handles that, so ``from .selection import X`` inside ``coreaug_fast`` is an edge
to ``coreaug_fast.selection``, not to ``coreaug_fast/__init__``. An edge to a package's
``__init__`` exists only when the import really needs that ``__init__`` to have run (a
name that only the ``__init__`` defines or re-exports, or ``import coreaug_fast``). A
cycle is then a loop of such edges: modules that need each other executed.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"coreaug_fast": ROOT / "coreaug_fast", "coreaug_fast.kernels": ROOT / "kernels"}


def _modules() -> Dict[str, Path]:
    """Module name -> source file, for every .py under the package folders."""
    out = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _is_package(name: str, modules: Dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom, modules: Dict[str, Path]) -> Optional[str]:
    """The absolute base of a ``from X import ...`` in ``module``."""
    if not node.level:
        return node.module
    base = module.split(".")
    if not _is_package(module, modules):
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):  # every level: module, function, class, if-blocks
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, modules)
                targets = []
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            else:
                continue
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle as a list of modules (first == last), or None."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []

    def visit(m: str) -> Optional[List[str]]:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def all_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle through each group of modules that import each other, found by removing
    the modules of each cycle found and searching again."""
    graph = {m: set(t) for m, t in graph.items()}
    out = []
    while True:
        cycle = find_cycle(graph)
        if cycle is None:
            return out
        out.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])  # break this cycle's last edge, look for more


def test_the_package_has_no_import_cycle():
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_lazy_relative_and_kernel_imports():
    graph = import_graph()
    assert "coreaug_fast.selection.engine" in graph["coreaug_fast.selection.facility_location"]  # from . import engine
    assert "coreaug_fast.kernels.facility_location" in graph["coreaug_fast.selection.engine"]  # lazy, ..kernels
    assert "coreaug_fast.kernels.distances" in graph["coreaug_fast.kernels.facility_location"]  # kernels/ as a subpackage
    assert "coreaug_fast.vocabulary" in graph["coreaug_fast.kernels.distances"]  # from ..vocabulary, out of kernels/
    assert "coreaug_fast.selection.facility_location" not in graph["coreaug_fast.selection.distributed"]


# Data the twins may share with the paths they judge: types and tables, no code of a fast path.
DEPENDENCY_FREE = {"coreaug_fast.coreset", "coreaug_fast.policies", "coreaug_fast.vocabulary"}
# What those modules and the twins may import from outside the package.
_OUTSIDE = {"torch", "torchvision", "__future__"} | set(sys.stdlib_module_names)


def _outside_imports(path: Path) -> Set[str]:
    """Top-level names of the absolute imports in ``path`` that leave the package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names - {"coreaug_fast"}


def test_twins_import_no_code_of_the_paths_they_judge():
    """``coreaug_fast.reference`` reaches only itself and the dependency-free tables and types
    (lazy imports included), so a wrong constant in a fast path cannot also fool its twin."""
    graph, modules = import_graph(), _modules()
    twins = [m for m in graph if m == "coreaug_fast.reference" or m.startswith("coreaug_fast.reference.")]
    assert "coreaug_fast.reference.facility_location" in twins
    for m in twins:
        bad = {t for t in graph[m] if t not in DEPENDENCY_FREE and t not in twins}
        assert not bad, f"{m} imports {sorted(bad)}"
        assert _outside_imports(modules[m]) <= _OUTSIDE, m
    for m in DEPENDENCY_FREE:
        assert graph[m] <= DEPENDENCY_FREE, f"{m} imports {sorted(graph[m] - DEPENDENCY_FREE)}"
        assert _outside_imports(modules[m]) <= _OUTSIDE, m


def test_cycle_finder_finds_lazy_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
