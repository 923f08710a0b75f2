"""Property: after any sequence of good and bad edits, once valid, one load() equals a fresh import."""
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
]
REPORT = ("import json, importlib\n"
          "mods = {{n: importlib.import_module('{pkg}.' + n) for n in 'abcd'}}\n"
          "print(json.dumps([mods['a'].A, mods['b'].B, mods['c'].C, mods['d'].D]))\n")

edit = st.tuples(st.sampled_from(sorted(TEMPLATES)),
                 st.one_of(st.integers(0, 9), st.sampled_from(range(len(BAD))).map(lambda i: -1 - i)),
                 st.booleans(),   # keep the old mtime (a same-second edit)
                 st.booleans())   # call load() after this edit


def _write(path: str, text: str, keep_mtime: bool) -> None:
    st_before = os.stat(path) if os.path.exists(path) else None
    with open(path, "w") as f:
        f.write(text)
    if keep_mtime and st_before is not None:
        os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))


def _source(name: str, value: int) -> str:
    if value < 0:
        return BAD[-1 - value]
    if value >= 8 and name != "a":  # drop the imports: the graph loses edges, later regains them
        return f"{name.upper()} = {[value] if name == 'd' else value}\n"
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
            for key in [k for k in sys.modules if k == pkg or k.startswith(pkg + ".")]:
                del sys.modules[key]
            sys.path[:] = saved_path
            project_module._REGISTRY.clear()
            project_module._REGISTRY.update(saved_registry)


def _run(root: str, pkg: str, edits: list[tuple[str, int, bool, bool]], with_watcher: bool) -> None:
    os.mkdir(os.path.join(root, pkg))
    paths = {n: os.path.join(root, pkg, f"{n}.py") for n in TEMPLATES}
    _write(os.path.join(root, pkg, "__init__.py"), "", False)
    values = {n: 1 for n in TEMPLATES}
    for n in TEMPLATES:
        _write(paths[n], _source(n, 1), False)
    p = Project(pkg, root=root)
    with p.directory(pkg):
        p.file("__init__")
        for n in sorted(TEMPLATES):
            p.file(n)
    p.load()
    # an open inotify watcher lets load() check only the files it saw change
    watcher = p.watch_changes(backend="inotify") if with_watcher else None
    try:
        _edit(p, paths, values, edits, watcher)
    finally:
        if watcher is not None:
            watcher.close()
    _compare(root, pkg)


def _edit(p, paths, values, edits, watcher) -> None:
    for name, value, keep_mtime, load_now in edits:
        values[name] = value
        _write(paths[name], _source(name, value), keep_mtime)
        if load_now:
            if watcher is not None and value % 2:
                watcher.changed_files()  # as a server does before load(); else the fd is still readable
            try:
                p.load()
            except LoadError:
                pass
    for name, value in values.items():  # make everything valid again
        if value < 0:
            values[name] = 5
            _write(paths[name], _source(name, 5), False)
    if watcher is not None:
        watcher.changed_files()
    p.load()


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
