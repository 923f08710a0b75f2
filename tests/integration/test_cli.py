"""The `prefork` command line: flags, serving, reloading, and its exit statuses."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.integration_util import PYTHON, free_ports, http_get, save, wait_for

FLAGS = ["--workers", "-w", "--host", "--port", "-p", "--bind", "-b", "--port-per-worker", "--threads", "--pid",
         "--chdir", "--interface", "--log-file", "--error-logfile", "--access-logfile", "--log-level", "--graceful-timeout",
         "--timeout", "-t", "--project", "--reload",
         "--reload-timeout", "--no-partial", "--partial", "--upstream", "--upstream-reload"]

HELLO = '''\
import helper


def app(environ, start_response):
    body = (helper.greeting() + " " + str(environ["SERVER_PORT"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run `python -m prefork ARGS` to completion (for the error exits)."""
    return subprocess.run([PYTHON, "-m", "prefork", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "hello.py").write_text(HELLO)
    (folder / "helper.py").write_text('def greeting():\n    return "hello 1"\n')
    return folder


def body(port: int, path: str = "/") -> str:
    code, data = http_get(port, path)
    assert code == 200
    return data.decode()


def test_help_explains_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    script = Path(PYTHON).parent / "prefork"  # the console script installed next to this python
    assert subprocess.run([str(script), "--help"], capture_output=True, text=True,
                          timeout=20).stdout == result.stdout
    for flag in FLAGS:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", result.stdout), flag
    assert "exit status" in result.stdout
    assert "prefork ctl" in result.stdout


@pytest.mark.parametrize("args, reason", [
    (["hello"], 'APP must be "module:attr"'),
    (["hello:app", "--workers", "0"], "must be at least 1"),
    (["hello:app", "--bind", "localhost:http"], "'http' is not a port number"),
    (["hello:app", "--upstream-reload", "nginx -s reload"], "--upstream-reload needs --upstream"),
    (["hello:app", "--no-such-flag"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_one_line(site, args, reason):
    result = run_cli(*args, cwd=site)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


@pytest.mark.parametrize("app, reason", [
    ("nosuchmodule:app", "No module named 'nosuchmodule'"),
    ("hello:nope", "has no attribute 'nope'"),
])
def test_app_that_cannot_be_imported_exits_1(site, app, reason):
    result = run_cli(app, "-p", str(free_ports(1)), cwd=site)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prefork: cannot import the app") and reason in last, result.stderr


def test_project_with_a_broken_file_exits_1_naming_it(site):
    save(site / "helper.py", "def greeting(:\n")
    save(site / "project.py", 'from projectr import Project\np = Project("clibroken")\n'
                                     'p.file("helper")\np.file("hello")\n')
    result = run_cli("hello:app", "--project", "project.py", "-p", str(free_ports(1)), cwd=site)
    assert result.returncode == 1
    assert re.search(r"helper\.py:1: SyntaxError", result.stderr.strip().splitlines()[-1]), result.stderr


def test_live_pid_file_exits_1(site, tmp_path):
    pid_file = tmp_path / "live.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # this test's own process: certainly alive
    result = run_cli("hello:app", "-p", str(free_ports(1)), "--pid", str(pid_file), cwd=site)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "names a live process" in last and str(os.getpid()) in last, result.stderr
    assert pid_file.read_text() == f"{os.getpid()}\n"


def test_serves_and_exits_0_on_term(launcher, site, tmp_path):
    pid_file = tmp_path / "cli.pid"
    log_file = tmp_path / "cli.log"

    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "hello:app", "-w", "2", "--bind", f"127.0.0.1:{port}",
                "--pid", str(pid_file), "--log-file", str(log_file), "--log-level", "debug",
                "--threads", "2", "--graceful-timeout", "5", "--timeout", "10", "--port-per-worker"]

    server = launcher.start_http(command, workers=2, cwd=site, pid_file=pid_file)
    for port in server.ports:
        assert body(port) == f"hello 1 {port}"
    assert int(pid_file.read_text()) == server.proc.pid
    status = subprocess.run([PYTHON, "-m", "prefork", "ctl", "--pid", str(pid_file), "status"],
                            capture_output=True, text=True, timeout=10)
    assert status.returncode == 0, status.stderr
    assert len(re.findall(r"^\s*[01]\s+\d+\s+\d+", status.stdout, re.M)) == 2, status.stdout
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert not pid_file.exists()
    assert re.search(r"INFO prefork: master \d+ stopped", log_file.read_text())


def test_shared_port(launcher, site):
    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "hello:app", "-w", "2", "-p", str(port), "--shared-port"]

    server = launcher.start_http(command, workers=1, cwd=site)
    answers = {body(server.port) for _ in range(4)}
    assert answers == {f"hello 1 {server.port}"}
    assert "workers on 127.0.0.1:%d\n" % server.port in server.log()


def test_reload_without_project_watches_the_apps_modules(launcher, site):
    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "hello:app", "-w", "2", "-p", str(port), "--reload", "--partial", "always",
                "--port-per-worker"]

    server = launcher.start_http(command, workers=2, cwd=site)
    save(site / "helper.py", 'def greeting():\n    return "hello 2"\n')
    wait_for(lambda: all(body(p).startswith("hello 2") for p in server.ports), what="the helper edit")
    server.wait_log(r"reload #1: 2 modules \(helper, hello\) in \d+ ms; 2 workers replaced \(generation 1\)")
    # A module nothing imports yet is watched too: the working directory's files are the project.
    save(site / "later.py", 'WORD = "later"\n')
    save(site / "helper.py", 'from later import WORD\n\ndef greeting():\n    return "hello " + WORD\n')
    wait_for(lambda: all(body(p).startswith("hello later") for p in server.ports), what="the new module used")
    save(site / "later.py", 'WORD = "sooner"\n')
    wait_for(lambda: all(body(p).startswith("hello sooner") for p in server.ports), what="the new module's edit")


def test_project_and_reload_on_the_example(launcher, project_copy):
    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "myproject.app:application", "--project",
                str(project_copy / "project.py"), "--reload", "-w", "2", "-p", str(port), "--port-per-worker"]

    server = launcher.start(command, workers=2)
    save(project_copy / "myproject/version.py", 'VERSION = "cli"\n')
    server.wait_all(lambda s: s["version"] == "cli" and s["generation"] == 1, "the edit via the CLI")


def test_upstream_file_lists_the_worker_ports(launcher, site, tmp_path):
    upstream = tmp_path / "upstream.conf"

    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "hello:app", "-w", "2", "-p", str(port),
                "--upstream", str(upstream), "--log-level", "warning"]

    server = launcher.start_http(command, workers=2, cwd=site)
    text = wait_for(lambda: upstream.exists() and all(f":{p}" in upstream.read_text() for p in server.ports)
                    and upstream.read_text(), what="the upstream file")
    assert "upstream" in text
    assert " INFO " not in server.log()  # --log-level warning
