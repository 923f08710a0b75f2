"""Pure logic: import scanning and the dependency graph (no files, no loading)."""
from __future__ import annotations

import time

import networkx as nx

from projectr.graph import DependencyGraph, needs_cycle
from projectr.imports import imported_names


def test_import_scan_absolute_relative_and_deferred():
    source = """
import os, a.b.c
from x.y import z
from . import sibling
from .. import uncle
from .pkg import mod as m
try:
    import in_try
except ImportError:
    pass
class C:
    import in_class
def f():
    import in_function
lazy = lambda: __import__("nope")
"""
    names = imported_names(source, "top.sub.mod", is_package=False)
    assert {"os", "a", "a.b", "a.b.c", "x.y", "x.y.z", "top.sub", "top.sub.sibling", "top",
            "top.uncle", "top.sub.pkg", "top.sub.pkg.mod", "in_try", "in_class"} == names
    assert "x" not in names  # `from x.y import z` binds only z


def test_import_scan_from_a_package_init_and_broken_source():
    assert "top.pkg.child" in imported_names("from . import child", "top.pkg", is_package=True)
    assert imported_names("def (", "m", is_package=False) == set()
    assert imported_names("from .... import x", "a.b", is_package=False) == set()


def test_affected_orders_by_dependencies_then_declared_order():
    # declared: a b c d; needs: c -> a (a needs c), d imports b
    g = DependencyGraph(["a", "b", "c", "d"], needs=[("c", "a")], imports=[("b", "d")])
    assert g.order == ["b", "c", "a", "d"] or g.order == ["c", "a", "b", "d"]
    assert g.order.index("c") < g.order.index("a") and g.order.index("b") < g.order.index("d")
    assert g.affected(["c"]) == ["c", "a"]
    assert g.affected(["d"]) == ["d"]
    assert g.affected(["nonexistent"]) == []
    assert g.graph["c"]["a"]["kind"] == "needs" and g.graph["b"]["d"]["kind"] == "import"


def test_declared_order_is_kept_when_nothing_constrains_it():
    nodes = [f"n{i}" for i in range(20)]
    g = DependencyGraph(nodes, needs=[], imports=[])
    assert g.order == nodes


def test_cycle_reloads_as_one_unit():
    g = DependencyGraph(["app", "views", "other", "user"], needs=[],
                        imports=[("app", "views"), ("views", "app"), ("app", "user")])
    assert g.affected(["views"]) == ["app", "views", "user"]
    assert g.affected(["app"]) == ["app", "views", "user"]
    assert g.units() == [["app", "views"]]


def test_edge_with_both_sources_is_marked_declared():
    g = DependencyGraph(["a", "b"], needs=[("a", "b")], imports=[("a", "b")])
    assert g.graph["a"]["b"]["kind"] == "needs"
    assert g.graph["a"]["b"]["kinds"] == {"needs", "import"}


def test_order_only_edges_order_but_do_not_propagate():
    g = DependencyGraph(["child", "init"], needs=[], imports=[], order_only=[("init", "child")])
    assert g.order == ["init", "child"]
    assert g.affected(["init"]) == ["init"]


def test_why_explains_each_affected_file():
    g = DependencyGraph(["a", "b", "c"], needs=[("a", "b")], imports=[("b", "c")])
    assert g.why(["a"]) == {"a": None, "b": ("a", "needs"), "c": ("b", "import")}


def test_needs_cycle_finder():
    assert needs_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}, "a") == ["a", "b", "c", "a"]
    assert needs_cycle({"a": ["b"], "b": []}, "a") is None


def test_leaf_affected_is_fast_on_a_large_graph():
    """Affected-set for a leaf must not walk the graph: well under 1 ms at 10,000 modules."""
    n = 10_000
    nodes = [f"m{i}" for i in range(n)]
    imports = [(f"m{(i - 1) // 4}", f"m{i}") for i in range(1, n)]  # a 4-ary tree of imports
    g = DependencyGraph(nodes, needs=[], imports=imports)
    assert isinstance(g.graph, nx.DiGraph)
    leaf = nodes[-1]
    best = min(_timed(lambda: g.affected([leaf])) for _ in range(20))
    assert g.affected([leaf]) == [leaf]
    assert best < 0.001
    assert len(g.affected(["m0"])) == n


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_replace_imports_in_place():
    g = DependencyGraph(["a", "b", "c"], needs=[("a", "c")], imports=[("a", "b")])
    assert g.replace_imports("b", {"a"}, set()) is True
    assert not g.graph.has_edge("a", "b")
    assert g.replace_imports("c", set(), {"a", "b"}) is True  # forward edges: order still holds
    assert g.graph["a"]["c"]["kinds"] == {"needs", "import"} and g.graph["b"]["c"]["kind"] == "import"
    assert g.replace_imports("c", {"a"}, set()) is True
    assert g.graph["a"]["c"]["kinds"] == {"needs"}  # the declared edge stays
    assert g.replace_imports("a", set(), {"c"}) is False  # backward: the caller must rebuild


def test_type_checking_imports_are_not_edges():
    """`if TYPE_CHECKING:` bodies never run: their imports (often cycles) are not dependencies."""
    source = """
import typing
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from . import only_for_types
    import top.typed
if typing.TYPE_CHECKING:
    from .models import Model
elif True:
    from . import in_elif
else:
    from . import in_else
def f():
    if TYPE_CHECKING:
        import nested
"""
    names = imported_names(source, "top.mod", is_package=False)
    assert names == {"typing", "typing.TYPE_CHECKING", "top", "top.in_elif", "top.in_else"}
