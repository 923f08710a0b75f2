"""Fast unit tests of ProjectrServer's pure helpers and of the CLI's argument parsing."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from projectr import LoadError, Project
from prefork import cli
from prefork.apps import resolve_app
from prefork.discover import discover_project
from prefork.server.failures import describe_load_error, parse_stack_dump, user_frames_of_dump
from prefork.server.projectr import ProjectrServer, ReloadRecord, module_names, resolve_project
from prefork.sockets import Address

DUMP = '''\
Current thread 0x00007f (most recent call first):
  File "/usr/lib/python3.11/time.py", line 3 in sleep
  File "/site/pkg/settings.py", line 4 in <module>
  File "/work/projectr/loader.py", line 90 in _execute_one
'''


def test_parse_stack_dump_prefers_the_innermost_project_frame():
    assert parse_stack_dump(DUMP, ["/site/pkg/settings.py"]) == ("/site/pkg/settings.py", 4)
    assert parse_stack_dump(DUMP, []) == ("/usr/lib/python3.11/time.py", 3)
    assert parse_stack_dump("garbage", []) == (None, None)


@pytest.fixture
def small_project(tmp_path: Path) -> Project:
    pkg = tmp_path / "unitpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "leaf.py").write_text("VALUE = 1\n")
    (pkg / "top.py").write_text("from unitpkg import leaf\n\ndef app(environ, start_response):\n"
                                "    return [str(leaf.VALUE).encode()]\n")
    (pkg / "page.html").write_text("<p>hi</p>")
    (tmp_path / "project.py").write_text(textwrap.dedent('''\
        from projectr import Project
        p = Project("unitpkg-project")
        with p.directory("unitpkg"):
            p.file("__init__")
            p.file("leaf")
            p.file("top")
            p.resource("*.html")
        '''))
    project = Project.from_file(tmp_path / "project.py")
    yield project
    for name in [m for m in sys.modules if m == "unitpkg" or m.startswith("unitpkg.")]:
        del sys.modules[name]


def test_resolve_project_accepts_a_project_a_name_and_a_path(small_project, tmp_path):
    assert resolve_project(small_project) is small_project
    assert resolve_project("unitpkg-project") is small_project
    assert resolve_project(str(tmp_path / "project.py")).name == "unitpkg-project"
    with pytest.raises(KeyError, match="no project named"):
        resolve_project("no-such-project")


def test_resolve_app_reads_the_reloaded_module(small_project):
    small_project.load()
    first = resolve_app("unitpkg.top:app")
    assert first(None, None) == [b"1"]
    leaf = Path(small_project.root) / "unitpkg" / "leaf.py"
    leaf.write_text("VALUE = 22\n")
    assert [os.path.basename(p) for p in small_project.load()] == ["leaf.py", "top.py"]
    second = resolve_app("unitpkg.top:app")
    assert second is not first and second(None, None) == [b"22"]
    assert resolve_app(first) is second  # a callable is looked up again by module and name
    with pytest.raises(ValueError, match="module:attr"):
        resolve_app("unitpkg.top")
    with pytest.raises(TypeError, match="not a WSGI callable"):
        resolve_app("unitpkg.leaf:VALUE")


def test_module_names_names_modules_and_keeps_resource_paths(small_project):
    root = Path(small_project.root)
    paths = [str(root / "unitpkg" / "__init__.py"), str(root / "unitpkg" / "leaf.py"),
             str(root / "unitpkg" / "page.html"), "/elsewhere/x.py"]
    assert module_names(small_project, paths) == ["unitpkg", "unitpkg.leaf", "unitpkg/page.html", "/elsewhere/x.py"]


def test_describe_load_error_gives_file_line_error_and_short_traceback(small_project):
    small_project.load()
    leaf = Path(small_project.root) / "unitpkg" / "leaf.py"
    leaf.write_text("A = 1\nB = missing_name\n")
    with pytest.raises(LoadError) as caught:
        small_project.load()
    report = describe_load_error(caught.value)
    assert report["file"] == str(leaf) and report["line"] == 2
    assert report["error"] == "NameError: name 'missing_name' is not defined"
    assert "leaf.py\", line 2" in report["traceback"] and "/projectr/" not in report["traceback"]


def test_discover_project_declares_every_source_file_under_the_root(tmp_path):
    (tmp_path / "discpkg" / "templates").mkdir(parents=True)
    (tmp_path / "discpkg" / "__init__.py").write_text("")
    (tmp_path / "discpkg" / "util.py").write_text("import json\nX = 1\n")
    (tmp_path / "discpkg" / "templates" / "page.html").write_text("<p>")
    (tmp_path / "discapp.py").write_text("from discpkg import util\napp = lambda e, s: [b'']\n")
    (tmp_path / "lazy.py").write_text("Y = 2\n")  # imported by nobody at start: watched all the same
    for skipped in (".venv/lib", "node_modules/x", "build", "discpkg/__pycache__", "my-tool"):
        (tmp_path / skipped).mkdir(parents=True, exist_ok=True)
        (tmp_path / skipped / "skip.py").write_text("")
    (tmp_path / "venv2").mkdir()
    (tmp_path / "venv2" / "pyvenv.cfg").write_text("")
    (tmp_path / "venv2" / "v.py").write_text("")
    project = discover_project("discapp:app", tmp_path)
    assert "discapp" not in sys.modules  # nothing is imported to find the files
    names = sorted(os.path.relpath(p, tmp_path) for p in project.source_files)
    assert names == ["discapp.py", "discpkg/__init__.py", "discpkg/util.py", "lazy.py"]
    resources = sorted(os.path.relpath(p, tmp_path) for p in project.resource_files)
    assert "discpkg/templates/page.html" in resources
    assert not any(r.startswith((".venv", "node_modules", "build", "venv2")) for r in resources)


def test_projectr_server_adds_the_environment_mixin(small_project):
    class Mine:
        pass

    server = ProjectrServer(project=small_project, app="unitpkg.top:app", worker_mixins=[Mine])
    from prefork.worker import Worker

    mro = server.worker_class.__mro__
    names = [c.__name__ for c in mro]
    assert names.index("WorkerEnvironment") < names.index("Mine") < mro.index(Worker)
    assert server.reload_timeout == 5.0 and server.project is small_project


@pytest.mark.parametrize("argv, expected", [
    (["a:b"], dict(address=Address("127.0.0.1", 8000), workers=3, threads=1, port_per_worker=False)),
    (["a:b", "--bind", "0.0.0.0:9000", "-w", "4"], dict(address=Address("0.0.0.0", 9000), workers=4)),
    (["a:b", "-b", "[::1]:9001"], dict(address=Address("::1", 9001))),
    (["a:b", "-b", "localhost"], dict(address=Address("localhost", 8000))),
    (["a:b", "-b", "unix:run/app.sock"], dict(address=Address(path=os.path.abspath("run/app.sock")))),
    (["a:b", "-p", "7000", "--host", "localhost", "--threads", "8"],
     dict(address=Address("localhost", 7000), threads=8)),
    (["a:b", "-p", "7000", "--port-per-worker"], dict(address=Address("127.0.0.1", 7000), port_per_worker=True)),
    (["a:b", "--upstream", "up.conf"], dict(port_per_worker=True)),
    (["a:b", "-b", "127.0.0.1:7000", "-b", "unix:app.sock"],
     dict(address=Address("127.0.0.1", 7000), addresses=[Address("127.0.0.1", 7000),
                                                         Address(path=os.path.abspath("app.sock"))])),
    (["a:b", "--project", "p.py", "--reload", "--reload-timeout", "2.5"],
     dict(project="p.py", reload=True, reload_timeout=2.5, no_partial=False)),
    (["a:b", "--reload", "--no-partial"], dict(reload=True, no_partial=True)),
    (["a:b", "--reload", "--no-trial"], dict(reload=True)),  # accepted for old scripts
    (["a:b", "--log-level", "debug", "--timeout", "3", "--graceful-timeout", "9"],
     dict(log_level="DEBUG", timeout=3.0, graceful_timeout=9.0)),
])
def test_cli_parse_args(argv, expected):
    args = cli.parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_cli_server_kwargs_match_server_parameters():
    import inspect

    from prefork.server import Server

    kwargs = cli.server_kwargs(cli.parse_args(["a:b", "--pid", "x.pid"]))
    accepted = inspect.signature(Server).parameters
    assert set(kwargs) <= set(accepted)
    assert kwargs["pid_file"] == "x.pid"


def testuser_frames_of_dump_stop_at_the_loader(tmp_path):
    import projectr

    module = tmp_path / "slow.py"
    module.write_text("import time\n\ntime.sleep(60)\n")
    loader = os.path.join(os.path.dirname(projectr.__file__), "loader.py")
    dump = (f'Current thread 0x1 (most recent call first):\n'
            f'  File "{module}", line 3 in <module>\n'
            f'  File "{loader}", line 90 in _execute_one\n'
            f'  File "/srv/server.py", line 64 in main\n')
    assert user_frames_of_dump(dump) == f'  File "{module}", line 3, in <module>\n    time.sleep(60)'


def test_a_bug_in_a_reload_step_fails_that_reload_only(small_project, caplog):
    server = ProjectrServer(project=small_project, app="unitpkg.top:app")
    server.reload_count = 3

    def broken(record):
        raise ZeroDivisionError("division by zero")

    server._begin = broken
    with caplog.at_level("INFO", logger="prefork.reload"):
        server.handle_reload()
    assert not server.reloading  # the next reload request starts a new reload
    assert "reload #4 failed: ?: ZeroDivisionError: division by zero" in caplog.text
    assert "still serving generation 0" in caplog.text


@pytest.mark.parametrize("costs, cheaper", [
    ({}, False),                              # nothing measured: try a partial reload
    ({"fresh": 10.0}, True),                  # below what a checked partial reload costs at least
    ({"fresh": 120.0}, False),
    ({"fresh": 120.0, "partial": 200.0}, True),
    ({"fresh": 120.0, "partial": 40.0}, False),
])
def test_a_partial_reload_is_planned_only_while_it_is_cheaper(small_project, costs, cheaper):
    server = ProjectrServer(project=small_project, app="unitpkg.top:app")
    server._costs = dict(costs)
    assert server._fresh_is_cheaper() is cheaper
    with pytest.raises(ValueError, match="partial must be"):
        ProjectrServer(project=small_project, app="unitpkg.top:app", partial="sometimes")
