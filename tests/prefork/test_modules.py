"""prefork.modules: what an import added to sys.modules, read from its end."""
from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from prefork import modules


@pytest.fixture
def fake() -> Iterator[list[str]]:
    """Names of fake modules a test puts in sys.modules; removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def add(fake: list[str], name: str, path: str | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__file__ = path
    sys.modules[name] = module
    fake.append(name)
    return module


def test_since_lists_what_was_added_after_the_mark_oldest_first(fake):
    where = modules.mark()
    assert modules.since(where) == []
    a, b = add(fake, "_prefork_test_a"), add(fake, "_prefork_test_b")
    assert modules.since(where) == [("_prefork_test_a", a), ("_prefork_test_b", b)]


def test_since_says_nothing_once_a_module_from_before_the_mark_is_gone(fake):
    add(fake, "_prefork_test_old")
    where = modules.mark()
    add(fake, "_prefork_test_new")
    del sys.modules["_prefork_test_old"]
    assert modules.since(where) is None


def test_since_says_nothing_when_the_last_module_was_removed_and_imported_again(fake):
    add(fake, "_prefork_test_x")
    where = modules.mark()
    del sys.modules["_prefork_test_x"]
    add(fake, "_prefork_test_y")
    sys.modules["_prefork_test_x"] = types.ModuleType("_prefork_test_x")
    assert modules.since(where) is None


def test_forget_removes_a_module_and_its_name_in_the_parent_package(fake):
    parent = add(fake, "_prefork_test_pkg")
    child = add(fake, "_prefork_test_pkg.child")
    parent.child = child  # type: ignore[attr-defined]
    modules.forget(["_prefork_test_pkg.child"])
    assert "_prefork_test_pkg.child" not in sys.modules and not hasattr(parent, "child")


def test_a_project_module_is_one_loaded_from_a_file_under_the_root(fake, tmp_path):
    inside = add(fake, "_prefork_test_in", str(tmp_path / "app" / "views.py"))
    outside = add(fake, "_prefork_test_out", str(tmp_path / "lib" / "views.py"))
    builtin = add(fake, "_prefork_test_builtin")
    root = str(tmp_path / "app")
    assert modules.is_project_module(inside, root)
    assert not modules.is_project_module(outside, root) and not modules.is_project_module(builtin, root)
