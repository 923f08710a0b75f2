"""What load() observes while modules execute: imports made at run time become edges."""
from __future__ import annotations

import builtins
import importlib
import sys

import pytest

from projectr import LoadError
from projectr_testutil import tree  # noqa: F401  (tree is a fixture)

_original_import = builtins.__import__
_original_gcd = importlib._bootstrap._gcd_import  # type: ignore[attr-defined]


def _files(tree, *names):
    return [str(tree.path(f"PKG/{n}.py")) for n in names]


def _registry_project(tree, app_first: bool = False):
    """app calls registry.autodiscover() at import time, which imports plugin inside the function;
    dyn and dyn2 reach settings only through importlib.import_module."""
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/settings.py", "DEBUG = 1\n")
    tree.write("PKG/plugin.py", "NAME = 'one'\n")
    tree.write("PKG/registry.py", "def autodiscover():\n    from . import plugin\n    return plugin.NAME\n")
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\n")
    tree.write("PKG/dyn.py", "import importlib\nS = importlib.import_module('PKG.settings').DEBUG\n")
    tree.write("PKG/dyn2.py", "from importlib import import_module\nS = import_module('.settings', __package__).DEBUG\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        if app_first:
            p.file("registry")
            p.file("app")  # declared before plugin: its run-time edge points backwards
        for name in ("settings", "plugin", "registry", "app", "dyn", "dyn2"):
            p.file(name)
    return p


def test_an_import_inside_a_function_called_at_load_time_is_an_edge(tree):
    p = _registry_project(tree)
    plugin, registry, app = _files(tree, "plugin", "registry", "app")
    assert p.affected([plugin]) == [plugin]  # the source scan cannot see it
    p.load()
    assert p.affected([plugin]) == [plugin, app]
    assert p.graph.edges[plugin, app]["kind"] == "runtime"
    assert not p.graph.has_edge(plugin, registry)  # registry's own load never imported plugin
    tree.write("PKG/plugin.py", "NAME = 'two'\n")
    assert p.load() == [plugin, app]
    assert sys.modules[f"{tree.pkg}.app"].FOUND == "two"


def test_import_module_calls_are_edges(tree):
    p = _registry_project(tree)
    settings, dyn, dyn2 = _files(tree, "settings", "dyn", "dyn2")
    p.load()
    assert p.affected([settings]) == [settings, dyn, dyn2]
    tree.write("PKG/settings.py", "DEBUG = 2\n")
    assert p.load() == [settings, dyn, dyn2]
    assert sys.modules[f"{tree.pkg}.dyn"].S == sys.modules[f"{tree.pkg}.dyn2"].S == 2


def test_an_import_module_bound_before_the_load_is_seen(tree):
    """Django's setup() imports the settings module with an import_module it imported long ago."""
    helper = tree.write("site/runtime_helper_PKG.py",
                        "from importlib import import_module\ndef setup(name):\n    return import_module(name)\n")
    sys.path.insert(0, str(tree.root / "site"))
    importlib.import_module(f"runtime_helper_{tree.pkg}")
    try:
        tree.write("PKG/__init__.py", "")
        tree.write("PKG/settings.py", "X = 1\n")
        tree.write("PKG/wsgi.py", f"import runtime_helper_{tree.pkg} as h\nX = h.setup('{tree.pkg}.settings').X\n")
        p = tree.project()
        with p.directory(tree.pkg):
            p.file("__init__")
            p.file("settings")
            p.file("wsgi")
        p.load()
        assert p.affected(_files(tree, "settings")) == _files(tree, "settings", "wsgi")
    finally:
        del sys.modules[f"runtime_helper_{tree.pkg}"]
        assert helper


def test_a_backward_run_time_edge_reorders_the_load(tree):
    p = _registry_project(tree, app_first=True)
    plugin, app = _files(tree, "plugin", "app")
    p.load()
    tree.write("PKG/plugin.py", "NAME = 'three'\n")
    assert p.load() == [plugin, app]  # plugin first, though app was declared before it
    assert sys.modules[f"{tree.pkg}.app"].FOUND == "three"


def test_run_time_edges_follow_the_last_successful_run(tree):
    p = _registry_project(tree)
    plugin, app = _files(tree, "plugin", "app")
    p.load()
    tree.write("PKG/app.py", "from . import registry\nFOUND = None\n")  # stops calling autodiscover
    assert p.load() == [app]
    assert not p.graph.has_edge(plugin, app)
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\nraise RuntimeError\n")
    with pytest.raises(LoadError):
        p.load()
    assert not p.graph.has_edge(plugin, app)  # a failed run teaches nothing
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\n")
    p.load()
    assert p.graph.edges[plugin, app]["kind"] == "runtime"


def test_the_import_hooks_exist_only_during_load(tree):
    p = _registry_project(tree)
    p.load()
    assert builtins.__import__ is _original_import
    assert importlib._bootstrap._gcd_import is _original_gcd  # type: ignore[attr-defined]
    tree.write("PKG/app.py", "raise RuntimeError\n")
    with pytest.raises(LoadError):
        p.load()
    assert builtins.__import__ is _original_import
    assert importlib._bootstrap._gcd_import is _original_gcd  # type: ignore[attr-defined]
