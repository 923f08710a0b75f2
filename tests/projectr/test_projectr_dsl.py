"""The DSL: declaration order, registry, names, needs errors, definition files."""
from __future__ import annotations

import os

import pytest

from projectr import LoadError, Project, ProjectError
from projectr_testutil import tree  # noqa: F401  (a fixture)


def test_source_files_in_declared_order_with_nested_directories(tree):
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("version")
        p.file("util", needs=["version"])
        with p.directory("views"):
            p.file("home", needs=["../util"])
        p.file("__init__")
    root = str(tree.root)
    assert p.source_files == [os.path.join(root, tree.pkg, "version.py"), os.path.join(root, tree.pkg, "util.py"),
                              os.path.join(root, tree.pkg, "views", "home.py"),
                              os.path.join(root, tree.pkg, "__init__.py")]
    assert p.modules[p.source_files[2]] == f"{tree.pkg}.views.home"
    assert p.modules[p.source_files[3]] == tree.pkg


def test_registry_lookup(tree):
    p = tree.project("registry-test-" + tree.pkg)
    assert Project["registry-test-" + tree.pkg] is p
    assert Project.find("registry-test-" + tree.pkg) is p
    assert Project.find(p) is p


def test_unknown_project_lists_known_names(tree):
    tree.project("known-" + tree.pkg)
    with pytest.raises(KeyError) as info:
        Project.find("nope-" + tree.pkg)
    assert "known-" + tree.pkg in str(info.value)
    with pytest.raises(KeyError):
        Project["nope-" + tree.pkg]


def test_root_defaults_to_the_calling_files_folder():
    p = Project("root-default-test")
    assert p.root == os.path.dirname(os.path.abspath(__file__))


def test_unknown_need_names_both_files(tree):
    p = tree.project()
    with p.directory("app"):
        p.file("a")
        with pytest.raises(ProjectError) as info:
            p.file("b", needs=["missing"])
    assert "app/missing.py" in str(info.value) and "app/b.py" in str(info.value)


def test_needs_cycle_is_named(tree):
    p = tree.project()
    p.file("a")
    p.file("b", needs=["a"])
    p.file("c", needs=["b"])
    with pytest.raises(ProjectError) as info:
        p.file("a", needs=["c"])  # declaring again adds needs: a -> c -> b -> a
    assert "needs cycle: a.py -> c.py -> b.py -> a.py" in str(info.value)
    with pytest.raises(ProjectError, match="needs cycle"):
        p.file("d", needs=["d"])
    assert p.affected([p.source_files[0]]) == p.source_files  # the rejected need was not kept


def test_paths_outside_root_and_bad_module_names_are_rejected(tree):
    p = tree.project()
    with pytest.raises(ProjectError):
        p.file("../outside")
    with pytest.raises(ProjectError):
        p.file("not-an-identifier")


def test_from_file_returns_the_defined_project_and_remembers_the_file(tree):
    path = tree.write("project.py", """
        from projectr import Project
        p = Project("from-file-PKG")
        with p.directory("PKG"):
            p.file("a")
    """)
    p = Project.from_file(path)
    assert p.name == f"from-file-{tree.pkg}"
    assert p.definition_file == path
    assert p.root == str(tree.root)  # the folder of the definition file
    assert Project[p.name] is p
    assert p.source_files == [str(tree.path("PKG/a.py"))]


def test_from_file_without_a_project_is_an_error(tree):
    path = tree.write("empty.py", "x = 1\n")
    with pytest.raises(ProjectError, match="defines no Project"):
        Project.from_file(path)


def test_from_file_with_a_broken_definition_names_file_and_line(tree):
    path = tree.write("broken.py", "from projectr import Project\n\nundefined_name\n")
    with pytest.raises(LoadError) as info:
        Project.from_file(path)
    assert f"{path}:3" in str(info.value)
    assert isinstance(info.value.exception, NameError)
