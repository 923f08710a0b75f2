"""Property: after any sequence of good and bad edits, once valid, one load() equals a fresh import.

Along the way every failed load() must leave the project's modules and its package's attributes
exactly as they were (a module it imported first, like the undeclared `extra`, must not stay as an
attribute either), keep the third-party modules it imported (TP refuses a second import, as numpy
does), and leave the graph as it was, even when the graph was being rebuilt for that load.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projectr import LoadError, Project
from projectr import project as project_module
from projectr_testutil import run_python

TEMPLATES = {
    "a": "A = {v}\n",
    "b": "from . import a\nB = a.A + {v}\n",
    "c": "from .b import B\nC = B * {v}\n",
    "d": "from . import a, c\nD = [a.A, c.C, {v}]\n",
}
BAD = [
    "X = (\n",                              # SyntaxError
    "X = 1\nundefined_name\n",              # NameError after a statement ran
    "from .nothing import x\n",             # ImportError
    "raise RuntimeError('boom')\n",
    "from . import extra\nimport TP.sub\nraise RuntimeError('after first imports')\n",
]
# b = 7 imports the third-party package too (TP.sub.S is 0: same value as the template)
WITH_TP = "from . import a\nimport TP.sub\nB = a.A + 7 + TP.sub.S\n"
THIRD_PARTY = {
    "TPguard.py": "count = 0\n",
    "TP/__init__.py": "import TPguard\nTPguard.count += 1\nif TPguard.count > 1:\n    raise ImportError('twice')\n",
    "TP/sub.py": "S = 0\n",
}
REPORT = ("import json, importlib, sys\nsys.path.insert(0, 'site')\n"
          "mods = {{n: importlib.import_module('{pkg}.' + n) for n in 'abcd'}}\n"
          "print(json.dumps([mods['a'].A, mods['b'].B, mods['c'].C, mods['d'].D]))\n")

edit = st.tuples(st.sampled_from(sorted(TEMPLATES)),
                 st.one_of(st.integers(0, 9), st.sampled_from(range(len(BAD))).map(lambda i: -1 - i)),
                 st.booleans(),   # keep the old mtime (a same-second edit)
                 st.booleans(),   # call load() after this edit
                 st.booleans())   # declare something first, so that load() rebuilds the graph


def _write(path: str, text: str, keep_mtime: bool) -> None:
    st_before = os.stat(path) if os.path.exists(path) else None
    with open(path, "w") as f:
        f.write(text)
    if keep_mtime and st_before is not None:
        os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))


def _source(name: str, value: int, tp: str) -> str:
    if value < 0:
        return BAD[-1 - value].replace("TP", tp)
    if value >= 8 and name != "a":  # drop the imports: the graph loses edges, later regains them
        return f"{name.upper()} = {[value] if name == 'd' else value}\n"
    if value == 7 and name == "b":
        return WITH_TP.replace("TP", tp)
    return TEMPLATES[name].format(v=value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=12), st.booleans())
def test_any_edit_sequence_ends_like_a_fresh_import(edits, with_watcher):
    pkg = f"prop{uuid.uuid4().hex[:10]}"
    saved_path, saved_registry = list(sys.path), dict(project_module._REGISTRY)
    with tempfile.TemporaryDirectory() as root:
        try:
            _run(root, pkg, edits, with_watcher)
        finally:
            for key in [k for k in sys.modules if k.partition(".")[0] in (pkg, "tp" + pkg, "tp" + pkg + "guard")]:
                del sys.modules[key]
            sys.path[:] = saved_path
            project_module._REGISTRY.clear()
            project_module._REGISTRY.update(saved_registry)


def _declare(pkg: str, root: str, name: str) -> Project:
    p = Project(name, root=root)
    with p.directory(pkg):
        p.file("__init__")
        for n in sorted(TEMPLATES):
            p.file(n)
    return p


def _run(root: str, pkg: str, edits: list[tuple[str, int, bool, bool, bool]], with_watcher: bool) -> None:
    os.mkdir(os.path.join(root, pkg))
    paths = {n: os.path.join(root, pkg, f"{n}.py") for n in TEMPLATES}
    _write(os.path.join(root, pkg, "__init__.py"), "extra = 'an attribute'\n", False)
    _write(os.path.join(root, pkg, "extra.py"), "X = 1\n", False)  # in the package, not declared
    os.makedirs(os.path.join(root, "site", "tp" + pkg))
    for rel, text in THIRD_PARTY.items():
        _write(os.path.join(root, "site", rel.replace("TP", "tp" + pkg)), text.replace("TP", "tp" + pkg), False)
    sys.path.insert(0, os.path.join(root, "site"))
    __import__(f"tp{pkg}guard")  # loaded before: it counts imports of the third-party package
    values = {n: 1 for n in TEMPLATES}
    for n in TEMPLATES:
        _write(paths[n], _source(n, 1, "tp" + pkg), False)
    p = _declare(pkg, root, pkg)
    p.load()
    # an open inotify watcher lets load() check only the files it saw change
    watcher = p.watch_changes(backend="inotify") if with_watcher else None
    try:
        _edit(p, pkg, paths, values, edits, watcher)
    finally:
        if watcher is not None:
            watcher.close()
    _compare(root, pkg)
    fresh = _declare(pkg, root, pkg + "-fresh")  # the graph of these files, from scratch
    assert set(p.graph.edges(data="kind")) == set(fresh.graph.edges(data="kind"))


def _edit(p, pkg, paths, values, edits, watcher) -> None:
    for i, (name, value, keep_mtime, load_now, redeclare) in enumerate(edits):
        values[name] = value
        _write(paths[name], _source(name, value, "tp" + pkg), keep_mtime)
        if redeclare:
            with p.directory(pkg):
                p.resource(f"r{i}/*.txt")
        if load_now:
            if watcher is not None and value % 2:
                watcher.changed_files()  # as a server does before load(); else the fd is still readable
            before, edges = _project_state(pkg), set(p.graph.edges(data="kind")) if i % 2 else None
            try:
                p.load()
            except LoadError:
                _assert_unchanged(pkg, before)
                assert edges is None or set(p.graph.edges(data="kind")) == edges
    for name, value in values.items():  # make everything valid again
        if value < 0:
            values[name] = 5
            _write(paths[name], _source(name, 5, "tp" + pkg), False)
    if watcher is not None:
        watcher.changed_files()
    p.load()


def _project_state(pkg: str) -> tuple[dict, dict]:
    """The project's modules, and the attributes of its package, by identity."""
    modules = {k: v for k, v in sys.modules.items() if k == pkg or k.startswith(pkg + ".")}
    return modules, dict(vars(sys.modules[pkg]))


def _assert_unchanged(pkg: str, before: tuple[dict, dict]) -> None:
    """After a failed load: the project exactly as before; third-party modules imported, kept, once."""
    modules, attrs = _project_state(pkg)
    assert modules.keys() == before[0].keys() and all(modules[k] is v for k, v in before[0].items())
    assert attrs.keys() == before[1].keys() and all(attrs[k] is v for k, v in before[1].items())
    tp = sys.modules.get("tp" + pkg)
    if tp is not None:
        assert tp.sub is sys.modules["tp" + pkg + ".sub"]
    assert sys.modules["tp" + pkg + "guard"].count <= 1


def _compare(root: str, pkg: str) -> None:
    mods = {n: sys.modules[f"{pkg}.{n}"] for n in TEMPLATES}
    ours = [mods["a"].A, mods["b"].B, mods["c"].C, mods["d"].D]
    fresh = run_python(REPORT.format(pkg=pkg), cwd=root, extra_args=["-B"])
    assert fresh.returncode == 0, fresh.stderr
    assert ours == json.loads(fresh.stdout)
    # no stale references: every module sees the current objects
    for holder, name in (("b", "a"), ("d", "a"), ("d", "c")):
        assert getattr(mods[holder], name, mods[name]) is mods[name]
    assert getattr(sys.modules[pkg], "a") is mods["a"]
    assert sys.modules[pkg].extra == "an attribute"  # never the module extra, which no good load imports
