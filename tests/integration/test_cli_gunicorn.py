"""The command line as a gunicorn user expects it: one shared address, -b, --chdir, logs, errors.

Real processes, sockets and files: each server runs in its own session and is killed by the
launcher at teardown.
"""
from __future__ import annotations

import http.client
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.integration_util import PYTHON, free_ports, http_get, wait_for

APP = '''\
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    body = f"pid {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "web.py").write_text(APP)
    return folder


def run_cli(*args: str, cwd: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    """``python -m prefork ARGS`` to completion (the start-up errors)."""
    return subprocess.run([PYTHON, "-m", "prefork", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be one line."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def pids_seen(port: int, tries: int = 40) -> set[str]:
    """The worker pids that answer new connections on ``port``."""
    seen = set()
    for _ in range(tries):
        code, body = http_get(port, "/")
        assert code == 200
        seen.add(body.decode())
    return seen


def test_one_shared_address_by_default(launcher, site):
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "2", "-p", str(port)],
                                 workers=1, cwd=site)
    # Both workers accept on the one port (a new connection each time: the kernel spreads them).
    wait_for(lambda: len(pids_seen(server.port)) == 2 or None, what="both workers on one port")
    with pytest.raises(OSError):
        http_get(server.port + 1, "/", timeout=1)
    assert f"2 workers on 127.0.0.1:{server.port}\n" in server.log()


def test_port_per_worker(launcher, site):
    server = launcher.start_http(
        lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "2", "-b", f"127.0.0.1:{port}", "--port-per-worker"],
        workers=2, cwd=site)
    first, second = (pids_seen(port, tries=4) for port in server.ports)
    assert len(first) == len(second) == 1 and first != second


def test_unix_socket(launcher, site, tmp_path):
    path = tmp_path / "web.sock"
    proc, log_path = launcher.spawn([PYTHON, "-m", "prefork", "web:app", "-w", "2", "-b", f"unix:{path}"], cwd=site)
    assert wait_for(lambda: get_unix(path), what="an answer on the unix socket").startswith("pid ")
    assert f"2 workers on unix:{path}" in log_path.read_text()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert not path.exists()  # the master removes the socket it made


def get_unix(path: Path) -> str:
    """The body of ``GET /`` over the Unix socket ``path``."""
    conn = UnixHTTPConnection(str(path))
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.unix_path)


def test_chdir(launcher, site, tmp_path):
    server = launcher.start_http(
        lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "1", "-p", str(port), "--chdir", str(site)],
        workers=1, cwd=tmp_path)
    assert http_get(server.port, "/")[1].startswith(b"pid ")


@pytest.mark.parametrize("reload", [[], ["--reload"]])
def test_wrong_folder_says_what_to_do_in_one_line(site, tmp_path, reload):
    result = run_cli("web:app", "-p", str(free_ports(1)), *reload, cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert "No module named 'web'" in line
    assert line.endswith("run it from the folder that contains web/ (or web.py), or pass --chdir"), line


def test_port_in_use_is_one_line_and_no_master_is_announced(site):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("web:app", "-w", "2", "-p", str(port), cwd=site)
    assert result.returncode == 1
    assert one_line(result) == (f"prefork: 127.0.0.1:{port} is in use: stop what listens there,"
                                " or choose another -b/--bind")


def test_later_port_in_use_with_port_per_worker_names_the_worker(site):
    base = free_ports(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        result = run_cli("web:app", "-w", "2", "-p", str(base), "--port-per-worker", cwd=site)
    assert result.returncode == 1
    assert one_line(result).startswith(
        f"prefork: port {base + 1} is in use (worker 1 of 2 listens on PORT+1 with --port-per-worker)")


@pytest.mark.parametrize("args, reason", [
    (["-w", "abc"], "argument -w/--workers: 'abc' is not a whole number"),
    (["-t", "soon"], "argument -t/--timeout: 'soon' is not a number of seconds"),
    (["-b", ":80"], "names no host"),
    (["-b", "unix:"], "names no path"),
    (["-b", "127.0.0.1:8000", "-p", "9000"], "either as -b/--bind or as --host/--port"),
    (["-b", "unix:/tmp/x.sock", "--port-per-worker"], "--port-per-worker needs one HOST:PORT address"),
    (["-b", "127.0.0.1:8000", "-b", "127.0.0.1:8001", "--port-per-worker"], "not several -b"),
])
def test_bad_flags_exit_2_with_one_line(site, args, reason):
    result = run_cli("web:app", *args, cwd=site)
    assert result.returncode == 2
    assert reason in one_line(result)


def test_access_log_on_stdout_in_gunicorns_format(tmp_path, site):
    port = free_ports(1)
    args = [PYTHON, "-m", "prefork", "web:app", "-w", "1", "-p", str(port), "--access-logfile", "-"]
    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen(args, cwd=site, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        try:
            wait_for(lambda: http_get(port, "/") or True, what="the server")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/page?x=1", headers={"User-Agent": 'ua "quoted"', "Referer": "http://r/"})
            assert conn.getresponse().read().startswith(b"pid ")
            conn.close()
            assert http_get(port, "/boom")[0] == 500
            os.kill(proc.pid, signal.SIGQUIT)  # graceful: the worker writes what it has before exiting
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    lines = out.decode().splitlines()
    stamp = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"
    assert re.fullmatch(rf'127\.0\.0\.1 - - {stamp} "GET / HTTP/1\.1" 200 \d+ "-" "[^"]*"', lines[0]), lines
    assert re.fullmatch(rf'127\.0\.0\.1 - - {stamp} "GET /page\?x=1 HTTP/1\.1" 200 \d+ "http://r/" '
                        r'"ua \\"quoted\\""', lines[1]), lines
    assert re.fullmatch(rf'127\.0\.0\.1 - - {stamp} "GET /boom HTTP/1\.1" 500 - "-" "[^"]*"', lines[2]), lines
    assert len(lines) == 3, lines  # nothing else on stdout: the log goes to stderr
    assert "prefork: master" in (tmp_path / "err.log").read_text()


def test_access_log_file_is_reopened_on_usr1(launcher, site, tmp_path):
    access = tmp_path / "access.log"
    server = launcher.start_http(
        lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "1", "-p", str(port), "--access-logfile", str(access)],
        workers=1, cwd=site)
    http_get(server.port, "/first")
    wait_for(lambda: "/first" in access.read_text() or None, what="the first line")
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    # The reopen reaches the worker through its control channel: ask until a request lands in the new file.
    wait_for(lambda: http_get(server.port, "/second") and access.exists() and "/second" in access.read_text()
             or None, what="a line in the reopened file")
    assert "/first" not in access.read_text()


def test_one_info_line_per_reload(launcher, site):
    (site / "helper.py").write_text('WORD = "one"\n')
    (site / "web.py").write_text(APP.replace('f"pid {os.getpid()}"', "helper.WORD").replace(
        "import os\n", "import os\n\nimport helper\n"))
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "2", "-p", str(port),
                                               "--reload"], workers=1, cwd=site)
    server.wait_log(r"all 2 workers ready \(WSGI, waitress\)")
    start = len(server.log().splitlines())
    (site / "helper.py").write_text('WORD = "two"\n')
    server.wait_log(r"reload #1: ")
    wait_for(lambda: http_get(server.port, "/")[1] == b"two" or None, what="the edit")
    new = server.log().splitlines()[start:]
    assert len(new) == 1 and "INFO prefork.reload: reload #1: " in new[0], new
    assert "\x1b[" not in server.log()  # a file, not a terminal: no colour


def test_colour_on_a_terminal_only(site, tmp_path):
    port = free_ports(1)
    main, secondary = pty.openpty()
    proc = subprocess.Popen([PYTHON, "-m", "prefork", "web:app", "-w", "1", "-p", str(port)], cwd=site,
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    os.close(secondary)
    try:
        text = b""
        deadline = time.monotonic() + 20
        while b"workers ready" not in text and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                text += os.read(main, 65536)
        assert b"\x1b[32mINFO\x1b[0m prefork: " in text, text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(main)


DJANGO_APP = '''\
import logging

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x",
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"short": {"format": "APPLOG %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "short"}},
        "loggers": {"shop": {"handlers": ["console"], "level": "INFO"}},  # propagates to the root
    },
)
django.setup()
log = logging.getLogger("shop")


def index(request):
    return HttpResponse("up")


def logs(request):
    for word in ("one", "two", "three"):
        log.info(word)
    return HttpResponse("ok")


urlpatterns = [path("", index), path("log", logs)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
'''


@pytest.mark.parametrize("reload", [[], ["--reload"]])
def test_the_apps_own_logging_comes_out_once_in_order(launcher, site, reload):
    (site / "shop.py").write_text(DJANGO_APP)
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "shop:application", "-w", "1",
                                               "-p", str(port), *reload], workers=1, cwd=site)
    assert http_get(server.port, "/log") == (200, b"ok")
    wait_for(lambda: "APPLOG shop three" in server.log() or None, what="the app's log lines")
    lines = [line for line in server.log().splitlines() if "APPLOG" in line or " shop:" in line]
    assert lines == ["APPLOG shop one", "APPLOG shop two", "APPLOG shop three"], server.log()


def test_several_addresses_every_worker_on_each(launcher, site, tmp_path):
    """-b repeated: each worker accepts on every address; a graceful stop drains all of them."""
    path = tmp_path / "also.sock"
    second = free_ports(1)
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "web:app", "-w", "2", "-b", f"127.0.0.1:{port}",
                                               "-b", f"127.0.0.1:{second}", "-b", f"unix:{path}"],
                                 workers=1, cwd=site)
    wait_for(lambda: len(pids_seen(server.port)) == 2 or None, what="both workers on the first address")
    wait_for(lambda: len(pids_seen(second)) == 2 or None, what="both workers on the second address")
    assert {get_unix(path) for _ in range(20)} <= pids_seen(server.port)
    assert (f"2 workers on 127.0.0.1:{server.port}, 127.0.0.1:{second}, unix:{path}\n") in server.log()
    server.signal(signal.SIGQUIT)
    assert server.proc.wait(timeout=20) == 0
    assert not path.exists()


def test_a_live_unix_socket_is_not_taken_over(site, tmp_path):
    path = tmp_path / "taken.sock"
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(path))
        holder.listen()
        result = run_cli("web:app", "-b", f"unix:{path}", cwd=site)
    assert result.returncode == 1
    assert one_line(result) == f"prefork: unix:{path} is in use: stop what listens there, or choose another -b/--bind"
    assert path.exists()  # still the other server's


def test_a_stale_unix_socket_file_is_replaced(launcher, site, tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(path))  # bound, never listened, closed: what a killed server leaves
    proc, log_path = launcher.spawn([PYTHON, "-m", "prefork", "web:app", "-w", "1", "-b", f"unix:{path}"], cwd=site)
    conn = UnixHTTPConnection(str(path))
    wait_for(lambda: conn.connect() or True, what="the server on the old socket's path")
    conn.close()
