"""The `projectr` command line, run as real subprocesses."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from projectr_testutil import tree  # noqa: F401  (a fixture)

DEFINITION = """
from projectr import Project
p = Project("cli-PKG")
with p.directory("PKG"):
    p.file("__init__")
    p.file("version")
    p.file("util", needs=["version"])
    p.file("app")
    p.file("views")
"""


def _tree(tree) -> str:
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/version.py", "V = 1\n")
    tree.write("PKG/util.py", "from PKG import version\n")
    tree.write("PKG/app.py", "from . import util\nfrom . import views\n")
    tree.write("PKG/views.py", "from .app import util\n")
    return tree.write("project.py", DEFINITION)


def _run(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-m", "projectr", *args], cwd=cwd, text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_graph_text_marks_declared_and_discovered_edges(tree):
    definition = _tree(tree)
    result = _run("graph", definition, cwd=tree.root)
    assert result.returncode == 0, result.stderr
    pkg = tree.pkg
    assert f"{pkg}/version.py -> {pkg}/util.py [needs]" in result.stdout
    assert f"{pkg}/util.py -> {pkg}/app.py [import]" in result.stdout
    assert f"{pkg}/app.py -> {pkg}/views.py [import]" in result.stdout
    assert f"{pkg}/views.py -> {pkg}/app.py [import]" in result.stdout


def test_graph_dot_and_mermaid(tree):
    definition = _tree(tree)
    dot = _run("graph", definition, "--format", "dot", cwd=tree.root)
    assert dot.stdout.startswith('digraph "cli-') and 'label="needs", style=solid' in dot.stdout
    mermaid = _run("graph", definition, "--format", "mermaid", cwd=tree.root)
    assert mermaid.stdout.startswith("graph LR") and "-->|needs|" in mermaid.stdout and "-.->|import|" in mermaid.stdout
    svg = tree.root / "graph.svg"
    rendered = _run("graph", definition, "--format", "dot", "--output", str(svg), cwd=tree.root)
    assert rendered.returncode == 0, rendered.stderr  # Graphviz is installed here
    assert svg.read_text().lstrip().startswith("<?xml")


def test_graph_output_format_from_the_suffix(tree):
    definition = _tree(tree)
    magic = {"graph.svg": b"<?xml", "graph.png": b"\x89PNG", "graph.pdf": b"%PDF"}
    for name, start in magic.items():  # rendered by Graphviz (installed here, and by .ci/run)
        result = _run("graph", definition, "-o", name, cwd=tree.root)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"wrote {name}\n", "")
        assert (tree.root / name).read_bytes().lstrip().startswith(start), name
    for name, fmt in {"graph.dot": "dot", "graph.mmd": "mermaid", "graph.txt": "text"}.items():
        result = _run("graph", definition, "-o", name, cwd=tree.root)
        assert (result.returncode, result.stdout) == (0, f"wrote {name}\n"), result.stderr
        printed = _run("graph", definition, "--format", fmt, cwd=tree.root).stdout
        assert (tree.root / name).read_text() == printed
    agreeing = _run("graph", definition, "--format", "mermaid", "-o", "again.mmd", cwd=tree.root)
    assert agreeing.returncode == 0 and (tree.root / "again.mmd").read_text().startswith("graph LR")


def test_graph_output_errors_are_one_line(tree):
    definition = _tree(tree)
    unknown = _run("graph", definition, "-o", "graph.xyz", cwd=tree.root)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: cannot tell the format of graph.xyz") and unknown.stderr.count("\n") == 1
    assert ".svg" in unknown.stderr and ".mmd" in unknown.stderr
    clash = _run("graph", definition, "--format", "mermaid", "-o", "graph.svg", cwd=tree.root)
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1 and "--format mermaid" in clash.stderr
    assert not (tree.root / "graph.xyz").exists() and not (tree.root / "graph.svg").exists()


def test_graph_render_without_graphviz(tree, tmp_path_factory):
    definition = _tree(tree)
    empty = tmp_path_factory.mktemp("no-graphviz")  # a PATH on which there is no `dot`
    env = dict(os.environ, PATH=str(empty))
    result = _run("graph", definition, "-o", "graph.svg", cwd=tree.root, env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Graphviz" in result.stderr and "Traceback" not in result.stderr
    assert not (tree.root / "graph.svg").exists()
    text = _run("graph", definition, "-o", "graph.dot", cwd=tree.root, env=env)  # no Graphviz needed
    assert text.returncode == 0 and (tree.root / "graph.dot").read_text().startswith("digraph")


def test_check_clean_project(tree):
    definition = _tree(tree)
    result = _run("check", definition, cwd=tree.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 5 files loaded" in result.stdout
    assert f"cycle: {tree.pkg}/app.py <-> {tree.pkg}/views.py" in result.stdout


def test_check_reports_errors_unlisted_and_missing(tree):
    definition = _tree(tree)
    tree.write("PKG/stray.py", "")
    bad = _run("check", definition, cwd=tree.root)
    assert bad.returncode == 1 and f"unlisted: {tree.pkg}/stray.py" in bad.stdout
    os.unlink(tree.path("PKG/stray.py"))
    tree.write("PKG/version.py", "V = (\n")
    broken = _run("check", definition, cwd=tree.root)
    assert broken.returncode == 1 and f"{tree.path('PKG/version.py')}:1: SyntaxError" in broken.stdout
    os.unlink(tree.path("PKG/version.py"))
    gone = _run("check", definition, cwd=tree.root)
    assert gone.returncode == 1 and f"missing: {tree.pkg}/version.py" in gone.stdout


def test_check_reports_a_load_error_once(tree):
    definition = _tree(tree)
    tree.write("PKG/version.py", "V = (\n")
    result = _run("check", definition, cwd=tree.root)
    assert result.returncode == 1
    assert (result.stdout + result.stderr).count("SyntaxError") == 1, result.stdout + result.stderr
    assert f"\nerror: {tree.path('PKG/version.py')}:1: SyntaxError" in result.stdout


def test_check_reports_a_load_warning_once(tree):
    definition = _tree(tree)
    tree.write("PKG/version.py", "import warnings\nwarnings.warn('careful')\nV = 1\n")
    result = _run("check", definition, cwd=tree.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("careful") == 1
    assert f"warning: {tree.path('PKG/version.py')}:2: UserWarning: careful" in result.stdout


def test_check_counts_files_as_graph_does(tree):
    _tree(tree)
    tree.write("PKG/templates/a.html", "<p>a</p>\n")
    tree.write("PKG/templates/b.html", "<p>b</p>\n")
    definition = tree.write("project.py", DEFINITION + '    p.resource("templates/*.html")\n')
    header = _run("graph", definition, cwd=tree.root).stdout.splitlines()[0]
    assert ": 5 files in load order" in header
    result = _run("check", definition, cwd=tree.root)
    assert result.returncode == 0 and "ok: 5 files loaded, " in result.stdout, result.stdout + result.stderr


def test_check_reports_definition_errors(tree):
    _tree(tree)
    definition = tree.write("bad.py", DEFINITION + '    p.file("x", needs=["nope"])\n')
    result = _run("check", definition, cwd=tree.root)
    assert result.returncode == 1 and "x.py needs" in result.stderr


def test_affected_explains_why(tree):
    definition = _tree(tree)
    result = _run("affected", definition, f"{tree.pkg}/version.py", cwd=tree.root)
    assert result.returncode == 0, result.stderr
    pkg = tree.pkg
    assert result.stdout.splitlines() == [
        f"{pkg}/version.py  (changed)",
        f"{pkg}/util.py  (needs {pkg}/version.py)",
        f"{pkg}/app.py  (import {pkg}/util.py)",
        f"{pkg}/views.py  (import {pkg}/app.py)",
    ]


def test_affected_with_a_path_not_in_the_project(tree):
    _tree(tree)
    tree.write("PKG/templates/a.html", "<p>a</p>\n")
    definition = tree.write("project.py", DEFINITION + '    p.resource("templates/*.html")\n')
    elsewhere = tree.root / "elsewhere"
    elsewhere.mkdir()
    pkg = tree.pkg
    for cwd, project_file in [(tree.root, "project.py"), (elsewhere, definition), (elsewhere, "../project.py")]:
        result = _run("affected", project_file, f"{pkg}/version.py", "nope.py", cwd=cwd)
        assert result.returncode == 2 and result.stdout == "", (cwd, result.stdout)
        lines = result.stderr.splitlines()
        assert lines[0].startswith("error: ") and "nope.py" in lines[0] and f"{pkg}/version.py" not in lines[0]
        assert lines[1:] == [  # relative to the project's root, wherever it is run from
            f"its files, relative to {tree.root}:",
            f"  {pkg}/__init__.py", f"  {pkg}/version.py", f"  {pkg}/util.py", f"  {pkg}/app.py",
            f"  {pkg}/views.py", f"  {pkg}/templates/a.html",
        ], cwd


def test_affected_paths_relative_to_the_root_or_the_current_directory(tree):
    _tree(tree)
    tree.write("PKG/templates/a.html", "<p>a</p>\n")
    definition = tree.write("project.py", DEFINITION + '    p.resource("templates/*.html")\n')
    pkg = tree.pkg
    from_root = _run("affected", definition, f"{pkg}/views.py", f"{pkg}/templates/a.html", cwd=tree.root)
    assert from_root.returncode == 0, from_root.stderr
    assert from_root.stdout.splitlines() == [
        f"{pkg}/templates/a.html  (resource: reloads no module)",
        f"{pkg}/app.py  (import {pkg}/views.py)",
        f"{pkg}/views.py  (changed)",
    ]
    inside = _run("affected", "../project.py", "views.py", f"{pkg}/templates/a.html", cwd=tree.root / pkg)
    assert (inside.returncode, inside.stdout) == (0, from_root.stdout), inside.stderr


@pytest.fixture
def spawned():
    """Processes started by a test, each in its own session; killed by process group afterwards."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _readline(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no output within {timeout}s (got {buf!r})")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise AssertionError(f"projectr watch exited: {buf!r}")
        buf += chunk
    return buf.decode()


def test_watch_prints_changes_and_what_would_reload(tree, spawned):
    definition = _tree(tree)
    # Ctrl-C reaches a foreground command, whose SIGINT is not ignored. A test run started in the
    # background (`.ci/run &`) ignores SIGINT, a child inherits that, and `projectr watch` then
    # never sees the interrupt: start it as a terminal would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "projectr", "watch", definition], cwd=tree.root,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    spawned.append(proc)
    assert _readline(proc).startswith("watching cli-")
    tree.write("PKG/views.py", "from .app import util\nX = 1\n")
    assert _readline(proc) == f"changed: {tree.pkg}/views.py\n"
    assert _readline(proc) == f"{tree.pkg}/app.py  (import {tree.pkg}/views.py)\n"
    assert _readline(proc) == f"{tree.pkg}/views.py  (changed)\n"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 0
