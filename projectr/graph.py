"""The dependency graph: declared (`needs`) and discovered (import) edges, load order, affected sets.

Edges point from a dependency to its dependent (`u -> v`: v needs or imports u, so u loads first
and a change to u reloads v). Each edge has `kinds` (every source that produced it: "needs" when
declared, "import" when the source scan found it, "runtime" when v's last execution imported u)
and `kind`, the first of those in that order. Files in a cycle form one unit and reload together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx

# networkx is imported where a graph is built or walked, not with this module: importing it costs
# ~200 ms and 12-18 MB, and a process that only loads files never needs it (prefork's master forks
# its base before it builds its first graph, so the base, generations and workers never hold it).

NEEDS = "needs"
IMPORT = "import"
RUNTIME = "runtime"
KINDS = (NEEDS, IMPORT, RUNTIME)  # an edge's `kind` is the first of its `kinds` in this order


class DependencyGraph:
    """A project's graph with a precomputed load order, so `affected` only visits descendants."""

    def __init__(
        self,
        nodes: Sequence[str],
        needs: Iterable[tuple[str, str]],
        imports: Iterable[tuple[str, str]],
        order_only: Iterable[tuple[str, str]] = (),
        runtime: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Build from nodes in declared order and (dependency, dependent) edge pairs.

        `order_only` edges (a package's `__init__` before its submodules) shape the load order
        but do not make a change propagate.
        """
        import networkx as nx

        graph: nx.DiGraph[str] = nx.DiGraph()
        for index, node in enumerate(nodes):
            graph.add_node(node, index=index)
        for kind, edges in ((NEEDS, needs), (IMPORT, imports), (RUNTIME, runtime)):  # KINDS order
            for u, v in edges:
                if u == v:
                    continue
                if graph.has_edge(u, v):
                    graph[u][v]["kinds"].add(kind)
                else:
                    graph.add_edge(u, v, kind=kind, kinds={kind})
        self.graph = graph
        self.order: list[str] = _load_order(graph, list(order_only))
        self.position = {node: i for i, node in enumerate(self.order)}

    def affected(self, paths: Iterable[str]) -> list[str]:
        """Return `paths` (those in the graph) and everything depending on them, in load order."""
        import networkx as nx

        graph = self.graph
        found: set[str] = set()
        for path in paths:
            if path in graph and path not in found:
                found.add(path)
                found.update(nx.descendants(graph, path))
        return sorted(found, key=self.position.__getitem__)

    def replace_imports(self, path: str, old: set[str], new: set[str], kind: str = IMPORT) -> bool:
        """Swap the `kind` edges into `path` (from `old` to `new` sources) in place.

        Returns False when the precomputed order no longer holds (a new edge points backwards,
        maybe closing a cycle): the caller must rebuild. Removing edges never invalidates it.
        """
        graph = self.graph
        for u in old - new:
            if graph.has_edge(u, path):
                data = graph[u][path]
                data["kinds"].discard(kind)
                if data["kinds"]:
                    data["kind"] = _first_kind(data["kinds"])
                else:
                    graph.remove_edge(u, path)
        still_valid = True
        for u in new - old:
            if u == path or u not in graph:
                continue
            if graph.has_edge(u, path):
                data = graph[u][path]
                data["kinds"].add(kind)
                data["kind"] = _first_kind(data["kinds"])
                continue
            graph.add_edge(u, path, kind=kind, kinds={kind})
            still_valid = still_valid and self.position[u] < self.position[path]
        return still_valid

    def units(self) -> list[list[str]]:
        """Return the cycles (strongly connected sets of two or more files), each in load order."""
        import networkx as nx

        return [
            sorted(c, key=self.position.__getitem__) for c in nx.strongly_connected_components(self.graph) if len(c) > 1
        ]

    def why(self, changed: Iterable[str]) -> dict[str, tuple[str, str] | None]:
        """Map each affected file to (the file it was reached from, edge kind); None for a changed file."""
        reasons: dict[str, tuple[str, str] | None] = {}
        frontier = [p for p in changed if p in self.graph]
        for p in frontier:
            reasons[p] = None
        while frontier:
            nxt = []
            for u in frontier:
                for v, data in self.graph[u].items():
                    if v not in reasons:
                        reasons[v] = (u, data["kind"])
                        nxt.append(v)
            frontier = nxt
        return reasons


def _first_kind(kinds: set[str]) -> str:
    """The kind an edge shows: declared before scanned before observed at run time."""
    return next(k for k in KINDS if k in kinds)


def _load_order(graph: nx.DiGraph[str], order_only: list[tuple[str, str]]) -> list[str]:
    """Topological order of the cycle-condensed graph, declared order breaking ties."""
    import networkx as nx

    ordering = graph
    if order_only:
        ordering = graph.copy()
        ordering.add_edges_from((u, v) for u, v in order_only if u != v)
    condensed = nx.condensation(ordering)
    index = nx.get_node_attributes(graph, "index")
    members = {c: sorted(condensed.nodes[c]["members"], key=index.__getitem__) for c in condensed}
    first = {c: index[m[0]] for c, m in members.items()}
    order: list[str] = []
    for c in nx.lexicographical_topological_sort(condensed, key=first.__getitem__):
        order.extend(members[c])
    return order


def needs_cycle(needs: dict[str, list[str]], start: str) -> list[str] | None:
    """Return a cycle through `start` following `needs` (as [start, ..., start]), or None."""
    path: list[str] = [start]
    seen: set[str] = set()

    def visit(node: str) -> bool:
        for nxt in needs.get(node, ()):
            if nxt == start:
                path.append(nxt)
                return True
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                if visit(nxt):
                    return True
                path.pop()
        return False

    return path if visit(start) else None
