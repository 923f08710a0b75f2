"""Loading: order, change detection, dependents, cycles, transactions, resources, definition re-read."""
from __future__ import annotations

import importlib
import json
import os
import sys

import pytest

from projectr import LoadError, Project, ProjectError
from projectr_testutil import bump_mtime, next_batch, tree  # noqa: F401  (tree is a fixture)


def _chain(tree):
    """PKG: version <- util <- views/home (declared needs); other is unrelated."""
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/version.py", "V = 1\n")
    tree.write("PKG/util.py", "from PKG import version\ndef v():\n    return version.V\n")
    tree.write("PKG/views/__init__.py", "")
    tree.write("PKG/views/home.py", "from PKG import util\nPAGE = util.v()\n")
    tree.write("PKG/other.py", "O = 1\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("version")
        p.file("util", needs=["version"])
        p.file("other")
        with p.directory("views"):
            p.file("__init__")
            p.file("home", needs=["../util"])
    return p


def _files(tree, *names):
    return [str(tree.path(f"PKG/{n}.py")) for n in names]


def _package_a_b(tree, b):
    """PKG with modules a (A = 1) and b (B = b), declared a then b, loaded once."""
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/a.py", "A = 1\n")
    tree.write("PKG/b.py", f"B = {b}\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("a")
        p.file("b")
    p.load()
    return p


def test_first_load_loads_everything_in_order_then_nothing(tree):
    p = _chain(tree)
    assert p.load() == p.source_files
    assert p.load() == []
    assert str(tree.root) in sys.path


def test_modules_are_real_modules_on_their_parents(tree):
    p = _chain(tree)
    p.load()
    pkg = sys.modules[tree.pkg]
    home = sys.modules[f"{tree.pkg}.views.home"]
    assert pkg.views.home is home and home.PAGE == 1
    assert home.__file__ == str(tree.path("PKG/views/home.py"))
    assert importlib.import_module(f"{tree.pkg}.util") is pkg.util
    namespace: dict = {}
    exec(f"from {tree.pkg} import version", namespace)
    assert namespace["version"] is pkg.version


def test_touch_reloads_the_file_and_its_dependents_transitively_and_nothing_else(tree):
    p = _chain(tree)
    p.load()
    other = sys.modules[f"{tree.pkg}.other"]
    bump_mtime(tree.path("PKG/version.py"))
    assert p.load() == _files(tree, "version", "util", "views/home")
    assert sys.modules[f"{tree.pkg}.other"] is other
    bump_mtime(tree.path("PKG/views/home.py"))
    assert p.load() == _files(tree, "views/home")
    bump_mtime(tree.path("PKG/other.py"))
    assert p.load() == _files(tree, "other")


def test_edit_is_seen_by_dependents(tree):
    p = _chain(tree)
    p.load()
    tree.write("PKG/version.py", "V = 'two'\n")
    p.load()
    assert sys.modules[f"{tree.pkg}.views.home"].PAGE == "two"


def test_force_reloads_everything(tree):
    p = _chain(tree)
    p.load()
    assert p.load(force=True) == p.source_files


def test_import_discovered_edges(tree):
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/a.py", "A = 1\n")
    tree.write("PKG/b.py", "from .a import A\nB = A + 1\n")  # b imports a, nothing declared
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("b")
        p.file("a")
    assert p.load() == _files(tree, "__init__", "a", "b")  # a before b, though declared after
    assert p.graph.edges[str(tree.path("PKG/a.py")), str(tree.path("PKG/b.py"))]["kind"] == "import"
    tree.write("PKG/a.py", "A = 10\n")
    assert p.load() == _files(tree, "a", "b")
    assert sys.modules[f"{tree.pkg}.b"].B == 11


def test_new_import_added_by_an_edit_is_followed(tree):
    p = _package_a_b(tree, b=1)
    tree.write("PKG/b.py", "from .a import A\nB = A\n")
    assert p.load() == _files(tree, "b")
    assert p.affected(_files(tree, "a")) == _files(tree, "a", "b")


def test_rescan_follows_an_edit_without_loading_it(tree):
    """A process that plans reloads but never loads (prefork's master) keeps the graph current."""
    p = _package_a_b(tree, b=1)
    a, b = _files(tree, "a", "b")
    assert p.affected([a]) == [a]
    tree.write("PKG/b.py", "from .a import A\nB = A\n")
    assert p.affected([a]) == [a]  # not read yet
    p.rescan([b])
    assert p.affected([a]) == [a, b]
    assert sys.modules[p.modules[b]].B == 1  # nothing was loaded
    tree.write("PKG/b.py", "B = 3\n")
    p.rescan(b)
    assert p.affected([a]) == [a]
    assert p.load() == [b]  # the load still sees the edit


def test_import_cycle_reloads_together(tree):
    """The Flask pattern: app.py imports views at the bottom, views imports app."""
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/app.py", "ROUTES = []\nfrom . import views\n")
    tree.write("PKG/views.py", "from .app import ROUTES\nROUTES.append('home')\n")
    tree.write("PKG/user.py", "from .app import ROUTES\nCOUNT = len(ROUTES)\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("app")
        p.file("views")
        p.file("user")
    p.load()
    assert sys.modules[f"{tree.pkg}.app"].ROUTES == ["home"]
    tree.write("PKG/views.py", "from .app import ROUTES\nROUTES.append('home')\nROUTES.append('about')\n")
    assert p.load() == _files(tree, "app", "views", "user")
    assert sys.modules[f"{tree.pkg}.app"].ROUTES == ["home", "about"]
    assert sys.modules[f"{tree.pkg}.user"].COUNT == 2


def test_same_size_edits_within_one_timestamp_tick_are_seen(tree):
    tree.write("PKG/__init__.py", "")
    path = tree.write("PKG/v.py", "V = 1\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("v")
    p.load()
    st = os.stat(path)
    for value in (2, 3):
        with open(path, "w") as f:
            f.write(f"V = {value}\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
        assert os.stat(path).st_size == st.st_size
        assert p.load() == [path]
        assert sys.modules[f"{tree.pkg}.v"].V == value
    assert p.load() == []


def test_old_untouched_files_cost_a_stat_not_a_read(tree):
    """A file whose mtime is well before our read is vouched for by its stat: no hash."""
    tree.write("PKG/__init__.py", "")
    path = tree.write("PKG/v.py", "V = 1\n")
    old = os.stat(path).st_mtime_ns - 3_600 * 10**9
    os.utime(path, ns=(old, old))
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("v")
    p.load()
    assert not p._tracker.snapshots[path].racy
    with open(path, "w") as f:
        f.write("V = 2\n")   # a write that keeps size and (forged) mtime is invisible by design
    os.utime(path, ns=(old, old))
    assert p.load() == []


@pytest.mark.parametrize("bad_source, exc_type, line", [
    ("V = (\n", SyntaxError, 1),
    ("import json\nSIDE = []\nSIDE.append(1)\nundefined_name\n", NameError, 4),
    ("X = 1\nfrom PKG.nothing_here import y\n", ImportError, 2),
    ("X = 1\nimport no_such_module_anywhere_xyz\n", ModuleNotFoundError, 2),
    ("raise RuntimeError('boom')\n", RuntimeError, 1),
])
def test_failed_load_changes_nothing_and_recovers(tree, bad_source, exc_type, line):
    p = _chain(tree)
    p.load()
    before = dict(sys.modules)
    pkg = sys.modules[tree.pkg]
    old_util = pkg.util
    path = tree.write("PKG/util.py", bad_source)
    with pytest.raises(LoadError) as info:
        p.load()
    err = info.value
    assert err.file == path and err.line == line
    assert f"{path}:{line}" in str(err)
    assert isinstance(err.exception, exc_type) and err.original is err.exception and err.__cause__ is err.exception
    assert (err.path, err.lineno) == (err.file, err.line)
    assert err.traceback is not None and type(err.exception).__name__ in err.formatted_traceback
    assert dict(sys.modules) == before  # every key, same objects
    assert all(sys.modules[k] is v for k, v in before.items())
    assert pkg.util is old_util
    # still pending: loading again fails again
    with pytest.raises(LoadError):
        p.load()
    tree.write("PKG/util.py", "from PKG import version\ndef v():\n    return version.V * 100\n")
    assert p.load() == _files(tree, "util", "views/home")
    assert sys.modules[f"{tree.pkg}.views.home"].PAGE == 100
    assert sys.modules[tree.pkg].util is sys.modules[f"{tree.pkg}.util"]


def test_failure_in_a_dependent_rolls_back_the_changed_file(tree):
    p = _chain(tree)
    p.load()
    old_version = sys.modules[f"{tree.pkg}.version"]
    tree.write("PKG/util.py", "from PKG import version\nW = version.V\ndef v():\n    return W\n")
    p.load()
    tree.write("PKG/version.py", "RENAMED = 1\n")  # util now fails on version.V
    with pytest.raises(LoadError) as info:
        p.load()
    assert info.value.file == str(tree.path("PKG/util.py"))
    assert sys.modules[f"{tree.pkg}.version"] is old_version  # rolled back with util
    assert sys.modules[f"{tree.pkg}.version"].V == 1
    tree.write("PKG/version.py", "V = 5\n")
    assert p.load() == _files(tree, "version", "util", "views/home")
    assert sys.modules[f"{tree.pkg}.views.home"].PAGE == 5


def test_missing_file_fails_then_recovers(tree):
    p = _chain(tree)
    p.load()
    path = tree.path("PKG/other.py")
    path.unlink()
    with pytest.raises(LoadError) as info:
        p.load()
    assert isinstance(info.value.exception, FileNotFoundError)
    tree.write("PKG/other.py", "O = 2\n")
    assert p.load() == [str(path)]


def test_resources_are_reported_when_their_content_changes(tree):
    p = _chain(tree)
    with p.directory(tree.pkg):
        p.resource("templates/*.html")
    page = tree.write("PKG/templates/page.html", "<p>1</p>")
    assert p.resource_files == [page]
    assert p.load() == p.source_files + [page]
    assert p.load() == []
    bump_mtime(page)  # touched, same content: not a change for a resource
    assert p.load() == []
    tree.write("PKG/templates/page.html", "<p>2</p>")
    assert p.load() == [page]
    new = tree.write("PKG/templates/new.html", "x")
    tree.write("PKG/templates/ignored.txt", "x")
    assert p.load() == [new]


def test_definition_file_is_re_read_when_it_changes(tree):
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/a.py", "A = 1\n")
    tree.write("PKG/b.py", "from .a import A\nB = A\n")
    definition = """
        from projectr import Project
        p = Project("def-PKG")
        with p.directory("PKG"):
            p.file("__init__")
            p.file("a")
    """
    path = tree.write("project.py", definition)
    p = Project.from_file(path)
    assert p.load() == _files(tree, "__init__", "a")
    a_module = sys.modules[f"{tree.pkg}.a"]
    tree.write("project.py", definition.rstrip() + "\n            p.file('b', needs=['a'])\n")
    bump_mtime(path)
    assert p.load() == _files(tree, "b")
    assert sys.modules[f"{tree.pkg}.a"] is a_module  # unchanged file keeps its state
    assert Project[f"def-{tree.pkg}"] is p
    assert sys.modules[f"{tree.pkg}.b"].B == 1
    # a broken definition keeps the old declarations and is reported
    tree.write("project.py", definition.rstrip() + "\n            p.file('c', needs=['nope'])\n")
    with pytest.raises(ProjectError):
        p.load()
    assert p.source_files == _files(tree, "__init__", "a", "b")


def test_load_in_a_forked_child(tree):
    """The server trials a load in a fork: it must work there and leave the parent untouched."""
    p = _chain(tree)
    p.load()
    tree.write("PKG/version.py", "V = 7\n")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            loaded = p.load()
            os.write(w, json.dumps([loaded, sys.modules[f"{tree.pkg}.views.home"].PAGE]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        loaded, page = json.loads(f.read())
    os.waitpid(pid, 0)
    assert loaded == _files(tree, "version", "util", "views/home") and page == 7
    assert sys.modules[f"{tree.pkg}.views.home"].PAGE == 1
    assert p.load() == loaded


def test_an_inotify_watcher_spares_load_the_stat_of_every_file(tree):
    p = _chain(tree)
    p.load()
    version = str(tree.path("PKG/version.py"))
    with p.watch_changes(backend="inotify") as w:
        bump_mtime(version)
        assert p.load() == _files(tree, "version", "util", "views/home")  # fd unread: stat everything
        assert p._tracker.checked == len(p.source_files)
        tree.write("PKG/version.py", "V = 2\n")
        assert next_batch(w) == [version]
        assert p.load() == _files(tree, "version", "util", "views/home")
        assert p._tracker.checked == 1  # only what the watcher saw
        assert sys.modules[f"{tree.pkg}.views.home"].PAGE == 2
        assert p.load() == [] and p._tracker.checked == 0
        tree.write("PKG/version.py", "V = (\n")
        w.changed_files()
        with pytest.raises(LoadError):
            p.load()
        with pytest.raises(LoadError):
            p.load()  # still a candidate after the failure
        tree.write("PKG/version.py", "V = 3\n")
        assert p.load() == _files(tree, "version", "util", "views/home")
        assert sys.modules[f"{tree.pkg}.views.home"].PAGE == 3
    bump_mtime(version)
    assert p.load() == _files(tree, "version", "util", "views/home")  # closed: stat everything again
    assert p._tracker.checked == len(p.source_files)


def test_undeclared_and_namespace_parent_packages(tree):
    """A parent package that is not a project file is imported normally (here: a namespace package)."""
    tree.write("PKG/sub/a.py", "A = 1\n")
    tree.write("PKG/sub/b.py", "from .a import A\nB = A + 1\n")
    p = tree.project()
    with p.directory(f"{tree.pkg}/sub"):
        p.file("a")
        p.file("b")
    assert p.load() == [str(tree.path("PKG/sub/a.py")), str(tree.path("PKG/sub/b.py"))]
    assert sys.modules[f"{tree.pkg}.sub"].b.B == 2
    tree.write("PKG/sub/a.py", "A = 10\n")
    p.load()
    assert sys.modules[f"{tree.pkg}.sub"].b.B == 11


def test_an_edit_that_adds_a_backward_import_reorders(tree):
    p = _package_a_b(tree, b=2)
    tree.write("PKG/a.py", "from .b import B\nA = B\n")   # a (declared first) now imports b
    assert p.load() == _files(tree, "a")
    tree.write("PKG/b.py", "B = 3\n")
    assert p.load() == _files(tree, "b", "a")
    assert sys.modules[f"{tree.pkg}.a"].A == 3
    tree.write("PKG/a.py", "A = 4\n")                      # the edge goes away again
    assert p.load() == _files(tree, "a")
    tree.write("PKG/b.py", "B = 5\n")
    assert p.load() == _files(tree, "b")


def test_loaded_modules_behave_like_imported_ones(tree):
    """inspect finds their source; importlib.reload compiles the source, never a .pyc."""
    import inspect
    p = _chain(tree)
    p.load()
    version = sys.modules[f"{tree.pkg}.version"]
    assert inspect.getsource(version) == "V = 1\n"
    assert version.__spec__.origin == str(tree.path("PKG/version.py"))
    tree.write("PKG/version.py", "V = 9\n")
    assert importlib.reload(version).V == 9
    assert not tree.path("PKG/__pycache__").exists()  # we never write bytecode


def test_a_failed_load_leaves_no_edge_even_when_the_graph_was_rebuilt_for_it(tree):
    """A change of declarations makes load() rebuild the graph from the new scans; a failure must
    not keep the failed edit's import edges (they would make affected() lie)."""
    p = _package_a_b(tree, b=1)
    a, b = _files(tree, "a", "b")
    with p.directory(tree.pkg):
        p.resource("*.txt")  # new declarations: the next load rebuilds the graph
    tree.write("PKG/b.py", "from .a import A\nraise RuntimeError\n")
    with pytest.raises(LoadError):
        p.load()
    assert not p.graph.has_edge(a, b)
    assert p.affected([a]) == [a]
    tree.write("PKG/b.py", "B = 2\n")  # same imports as the loaded b: no rescan will fix the graph
    assert p.load() == [b]
    assert p.affected([a]) == [a]
