"""The import graph of skystack's modules, and the two layering rules it must obey.

Every ``import`` and ``from ... import`` of a module under ``src/skystack`` is read with
:mod:`ast` — at module level and inside functions, ``TYPE_CHECKING`` blocks included (a lazy
import is still a dependency) — and resolved to the skystack module it names. Modules are
grouped into *packages*: a subpackage of ``skystack`` (``skystack.io``, ``skystack.cluster``…)
is one package, a top-level module (``skystack.api``, ``skystack.pipeline``…) is one of its own.

Rules:

1. the graph between packages has no cycle (layers import downward only);
2. no module imports a name starting with ``_`` (dunders excepted) from another module: what
   another layer needs is made public where it lives.

Run ``python tools/import_graph.py`` to print the packages in layer order (each one imports
only packages printed before it) and any violation; the exit status is 1 when a rule is broken.
``tests/test_layers.py`` runs the same checks.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = "skystack"
SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass
class Graph:
    """``modules``: every skystack module; ``edges[a]``: modules ``a`` imports;
    ``private``: ``(importer, module, name)`` for each private name imported across modules."""

    modules: set[str] = field(default_factory=set)
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    private: list[tuple[str, str, str]] = field(default_factory=list)
    packages_of: dict[str, str] = field(default_factory=dict)

    def package_edges(self) -> dict[str, set[str]]:
        """Imports between packages (a package importing itself is left out)."""
        out: dict[str, set[str]] = {p: set() for p in self.packages_of.values()}
        for a, targets in self.edges.items():
            for b in targets:
                pa, pb = self.packages_of[a], self.packages_of[b]
                if pa != pb:
                    out[pa].add(pb)
        return out


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str, packages: set[str]) -> str:
    """``skystack.io.reader`` -> ``skystack.io``; ``skystack.api`` -> ``skystack.api``."""
    parts = module.split(".")
    if len(parts) >= 2 and ".".join(parts[:2]) in packages:
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def build(src: Path = SRC) -> Graph:
    """The graph of every module under ``src/skystack`` (see module docstring)."""
    files = sorted((src / ROOT).rglob("*.py"))
    graph = Graph()
    is_package = {}
    for f in files:
        name = _module_name(f, src)
        graph.modules.add(name)
        is_package[name] = f.name == "__init__.py"
    subpackages = {m for m, pkg in is_package.items() if pkg and m.count(".") == 1}
    for m in graph.modules:
        graph.packages_of[m] = _package(m, subpackages)

    def known(name: str) -> str | None:
        """The deepest skystack module ``name`` names (``a.b.c`` -> ``a.b`` if c is a name)."""
        while name and name not in graph.modules:
            name = name.rpartition(".")[0]
        return name or None

    for f in files:
        me = _module_name(f, src)
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = known(alias.name) if alias.name.startswith(ROOT) else None
                    if target and target != me:
                        graph.edges[me].add(target)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(me, is_package[me], node.level, node.module)
                if not base.startswith(ROOT):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in graph.modules:  # ``from . import kernels``: a module
                        target = sub
                    else:
                        target = known(base)
                        if (alias.name.startswith("_") and not alias.name.startswith("__")
                                and target != me):
                            graph.private.append((me, target, alias.name))
                    if target and target != me:
                        graph.edges[me].add(target)
    return graph


def package_cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected groups of more than one package (each holds a cycle)."""
    edges = graph.package_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def cycle_evidence(graph: Graph, group: list[str]) -> list[str]:
    """The module imports that join the packages of ``group``."""
    inside = set(group)
    return sorted(f"{a} -> {b}" for a, targets in graph.edges.items() for b in targets
                  if graph.packages_of[a] in inside and graph.packages_of[b] in inside
                  and graph.packages_of[a] != graph.packages_of[b])


def layers(graph: Graph) -> list[list[str]]:
    """Packages by layer: layer 0 imports no other package, layer k only layers below k
    (defined only when there is no cycle)."""
    edges = graph.package_edges()
    level: dict[str, int] = {}

    def depth(p: str) -> int:
        if p not in level:
            level[p] = 0 if not edges[p] else 1 + max(depth(q) for q in edges[p])
        return level[p]

    for p in edges:
        depth(p)
    out: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for p, k in level.items():
        out[k].append(p)
    return [sorted(x) for x in out]


def main() -> int:
    graph = build()
    bad = False
    for group in package_cycles(graph):
        bad = True
        print("cycle between packages:", ", ".join(group))
        for line in cycle_evidence(graph, group):
            print("   ", line)
    for me, target, name in sorted(graph.private):
        bad = True
        print(f"private import: {me} imports {name} from {target}")
    if bad:
        return 1
    short = len(ROOT) + 1
    for k, layer in enumerate(layers(graph)):
        print(f"layer {k}: " + ", ".join(p[short:] or ROOT for p in layer))
    edges = graph.package_edges()
    print(f"{len(graph.modules)} modules, {len(edges)} packages, "
          f"{sum(len(v) for v in edges.values())} imports between packages: no cycle, "
          "no private import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
