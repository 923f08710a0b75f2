"""A failed load() puts back exactly what it changed: sys.modules and package attributes for the
project's modules, while third-party modules it imported stay; an interruption cannot cut it short."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from projectr import LoadError
from projectr_testutil import tree  # noqa: F401  (tree is a fixture)

FAILING_B = "from . import extra\nfrom .sub import new\nimport tp_PKG.sub\nraise RuntimeError('after the imports')\n"


class Interrupt(BaseException):
    """Stands for an asynchronous exception (a signal handler's ReloadTimeout, a KeyboardInterrupt)."""


@pytest.fixture
def project(tree):
    """PKG (whose __init__ binds `extra` to a string) with a and b declared and loaded, an undeclared
    module extra and package sub beside them, and a third-party package tp_PKG that, like numpy,
    refuses a second import in the same process (its guard module was imported before any load)."""
    tree.write("PKG/__init__.py", "extra = 'an attribute'\n")
    tree.write("PKG/a.py", "A = 1\n")
    tree.write("PKG/b.py", "B = 1\n")
    tree.write("PKG/extra.py", "X = 1\n")
    tree.write("PKG/sub/__init__.py", "")
    tree.write("PKG/sub/new.py", "N = 1\n")
    tree.write("site/tpguard_PKG.py", "count = 0\n")
    tree.write("site/tp_PKG/__init__.py", "import tpguard_PKG as guard\nguard.count += 1\n"
                                          "if guard.count > 1:\n    raise ImportError('tp_PKG cannot be imported twice')\n")
    tree.write("site/tp_PKG/sub.py", "S = 1\n")
    sys.path.insert(0, str(tree.root / "site"))
    __import__(f"tpguard_{tree.pkg}")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("a")
        p.file("b")
    p.load()
    yield p
    for name in [k for k in sys.modules if k.startswith((f"tp_{tree.pkg}", f"tpguard_{tree.pkg}"))]:
        del sys.modules[name]


def _state(tree):
    """The project's modules and every attribute of the project's package, by identity."""
    modules = {k: v for k, v in sys.modules.items() if k == tree.pkg or k.startswith(tree.pkg + ".")}
    return modules, dict(vars(sys.modules[tree.pkg]))


def _assert_state(tree, before):
    modules, attrs = _state(tree)
    assert modules.keys() == before[0].keys()
    assert all(modules[k] is v for k, v in before[0].items())
    assert attrs.keys() == before[1].keys()
    assert all(attrs[k] is v for k, v in before[1].items())
    assert sys.modules[tree.pkg].extra == "an attribute"


def _assert_third_party_kept(tree):
    tp = sys.modules[f"tp_{tree.pkg}"]
    assert tp.sub is sys.modules[f"tp_{tree.pkg}.sub"]
    assert sys.modules[f"tpguard_{tree.pkg}"].count == 1


def test_a_failed_load_leaves_no_module_and_no_attribute_it_first_imported(tree, project):
    before = _state(tree)
    tree.write("PKG/b.py", FAILING_B)
    with pytest.raises(LoadError) as info:
        project.load()
    assert "after the imports" in str(info.value)
    _assert_state(tree, before)  # no PKG.extra, PKG.sub, and PKG.extra is the string again


def test_third_party_modules_first_imported_by_a_failed_load_are_kept(tree, project):
    tree.write("PKG/b.py", FAILING_B)
    with pytest.raises(LoadError):
        project.load()
    _assert_third_party_kept(tree)
    tree.write("PKG/b.py", "import tp_PKG.sub\nB = tp_PKG.sub.S\n")
    assert project.load() == [str(tree.path("PKG/b.py"))]  # no second import of tp_PKG
    _assert_third_party_kept(tree)


def _interrupt_restore_at(events: set[int], action) -> list[int]:
    """Trace the rollback's restore functions; at each line event numbered in `events`, run `action`
    (raise, or send a signal). Returns [number of line events seen]."""
    seen = [0]
    # the restore: loader._restore before the rewrite, Transaction._plan/_apply and _set after
    names = {("loader.py", "_restore"), ("rollback.py", "_plan"), ("rollback.py", "_apply"), ("rollback.py", "_set")}
    root = os.path.dirname(sys.modules["projectr"].__file__)

    def local(frame, event, arg):
        if event == "line":
            seen[0] += 1
            if seen[0] in events:
                action(seen[0])
        return local

    def tracer(frame, event, arg):
        code = frame.f_code
        if code.co_filename.startswith(root) and (os.path.basename(code.co_filename), code.co_name) in names:
            return local
        return None

    sys.settrace(tracer)
    return seen


def _raise(n: int) -> None:
    raise Interrupt(n)


@pytest.mark.parametrize("first", [1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
def test_an_exception_raised_inside_the_restore_does_not_cut_it_short(tree, project, first):
    before = _state(tree)
    tree.write("PKG/b.py", FAILING_B)
    _interrupt_restore_at({first, first + 7}, _raise)  # twice: the resumed restore is interrupted too
    try:
        with pytest.raises(Interrupt):  # the interruption still reaches the caller, after the restore
            project.load()
    finally:
        sys.settrace(None)
    _assert_state(tree, before)
    _assert_third_party_kept(tree)


class Alarm(BaseException):
    """What prefork's reload alarm raises (ReloadTimeout is a BaseException too)."""


@pytest.mark.parametrize("when", [1, 4, 16, 64])
def test_a_sigalrm_arriving_inside_the_restore_is_delivered_after_it(tree, project, when):
    before = _state(tree)
    tree.write("PKG/b.py", FAILING_B)

    def ring(signum, frame):
        raise Alarm("reload_timeout")

    previous = signal.signal(signal.SIGALRM, ring)
    seen = _interrupt_restore_at({when}, lambda n: signal.raise_signal(signal.SIGALRM))
    try:
        with pytest.raises(Alarm):
            project.load()
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGALRM, previous)
    assert seen[0] >= when  # the signal did arrive inside the restore
    _assert_state(tree, before)
    _assert_third_party_kept(tree)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # nothing left blocked
