"""prefork.upstream: the nginx upstream file, its reload command, and a real nginx in front.

Every file written here is checked by a real `nginx -t`; the last tests run a real nginx with
examples/nginx/nginx.conf in front of real loopback HTTP servers.
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import signal
import socket
import stat
import sys
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from prefork.upstream import NginxUpstream, ports_in, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONF = ROOT / "examples" / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by .ci/run")


def nginx_test(prefix: Path, conf: str = "nginx.conf") -> subprocess.CompletedProcess:
    """Run `nginx -t` on prefix/conf; nginx itself decides whether the upstream file is valid."""
    return subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", conf, "-e", "error.log"],
                          capture_output=True, text=True, timeout=20, start_new_session=True)


def prepare_prefix(prefix: Path, port: int = 0) -> Path:
    """Copy examples/nginx/nginx.conf into prefix, listening on 127.0.0.1:port."""
    text = EXAMPLE_CONF.read_text()
    assert text.count("listen 127.0.0.1:8080;") == 1
    if port:
        text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    prefix.mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(text)
    return prefix


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the file ---------------------------------------------------------------------------------------


def test_render_block_and_fragment() -> None:
    assert render([8001, 8000, 8001], "myapp", keepalive=16) == (
        "# Written by prefork.upstream: rewritten whenever the set of live worker ports changes.\n"
        "upstream myapp {\n"
        "    server 127.0.0.1:8000;\n"
        "    server 127.0.0.1:8001;\n"
        "    keepalive 16;\n"
        "}\n")
    fragment = render([9000], None, host="10.0.0.7", server_options="max_fails=1 fail_timeout=2s")
    assert fragment.splitlines()[1:] == ["server 10.0.0.7:9000 max_fails=1 fail_timeout=2s;"]
    assert ports_in(render([1, 2, 3])) == {1, 2, 3}
    assert ports_in(render([])) == set()  # the placeholder is `down`, not a live port


@pytest.mark.parametrize("ports", [[8000], [8000, 8001, 8002], []])
def test_nginx_accepts_what_is_written(tmp_path: Path, ports: list[int]) -> None:
    prefix = prepare_prefix(tmp_path / "nginx")
    up = NginxUpstream(prefix / "upstream.conf", name="prefork", reload_command=None, keepalive=8)
    assert up.sync(ports) is True
    result = nginx_test(prefix)
    assert result.returncode == 0, result.stderr


def test_nginx_accepts_a_fragment_inside_an_upstream_of_ones_own(tmp_path: Path) -> None:
    # several hosts: one fragment per host, included in a hand-written upstream block
    for host, ports in (("a", [8000, 8001]), ("b", [9000])):
        NginxUpstream(tmp_path / f"{host}.conf", name=None, reload_command=None).sync(ports)
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid; events {}\n"
        "http { upstream prefork { include a.conf; include b.conf; keepalive 8; }\n"
        "       server { listen 127.0.0.1:1; location / { proxy_pass http://prefork; } } }\n")
    result = nginx_test(tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_rejects_an_empty_block_which_we_never_write(tmp_path: Path) -> None:
    prefix = prepare_prefix(tmp_path / "nginx")
    (prefix / "upstream.conf").write_text("upstream prefork {\n}\n")
    assert nginx_test(prefix).returncode != 0  # why the empty set keeps the last list
    up = NginxUpstream(prefix / "upstream.conf", reload_command=None)
    assert up.sync([]) is False  # a file exists: kept as it is
    up.sync([8000])
    assert up.sync([]) is False
    assert ports_in((prefix / "upstream.conf").read_text()) == {8000}
    assert nginx_test(prefix).returncode == 0


def test_atomic_write_mode_and_no_leftovers(tmp_path: Path) -> None:
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command=None)
    up.sync([8000, 8001])
    assert stat.S_IMODE(os.stat(tmp_path / "upstream.conf").st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstream.conf"]
    # a new helper on an existing file starts from the ports it lists: no rewrite, no reload
    again = NginxUpstream(tmp_path / "upstream.conf", reload_command=None)
    assert again.ports == {8000, 8001} and again.sync([8001, 8000]) is False


# --- the reload command -----------------------------------------------------------------------------


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    """A real reload command: a script that appends the upstream file's ports to a log."""
    log = tmp_path / "reloads.log"
    script = tmp_path / "reload.sh"
    script.write_text(f"#!/bin/sh\ngrep -v down {tmp_path / 'upstream.conf'} | grep -o ':[0-9][0-9]*' | sed 's/$/;/'"
                      f" | tr -d '\\n' >> {log}\n"
                      f"echo >> {log}\n")
    script.chmod(0o755)
    return [str(script)], log


def test_reload_command_runs_only_when_ports_change(tmp_path: Path, recorder) -> None:
    command, log = recorder
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command=command)
    assert up.sync([8000, 8001]) is True
    assert up.sync([8001, 8000]) is False
    assert up.sync([8000, 8001, 8002]) is True
    assert up.sync([]) is False
    assert up.sync([8000]) is True
    assert log.read_text().splitlines() == [":8000;:8001;", ":8000;:8001;:8002;", ":8000;"]
    assert up.reloads == 3


def test_reload_command_as_a_string_and_its_failure_is_logged(tmp_path: Path, caplog) -> None:
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command="sh -c 'echo nope >&2; exit 3'")
    assert up.reload_command == ["sh", "-c", "echo nope >&2; exit 3"]
    assert up.sync([8000]) is True  # the file is written whatever the command does
    assert "exited 3: nope" in caplog.text
    up = NginxUpstream(tmp_path / "other.conf", reload_command=[str(tmp_path / "missing")])
    assert up.sync([8000]) is True
    assert "failed" in caplog.text


# --- the hooks ----------------------------------------------------------------------------------------


def worker(server, index: int, port: int, ready: bool = True, pid: int = 1000):
    w = SimpleNamespace(index=index, port=port, ready=ready, pid=pid + index, server=server)
    server.workers.append(w)
    return w


def test_hooks_follow_the_live_workers(tmp_path: Path, recorder) -> None:
    command, log = recorder
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command=command)
    assert up.hooks() == {"worker_ready": up.worker_ready, "worker_exited": up.worker_exited}
    server = SimpleNamespace(workers=[])
    w0 = worker(server, 0, 8000, ready=False)
    w1 = worker(server, 1, 8001, ready=False)
    w0.ready = True
    up.worker_ready(w0)
    w1.ready = True
    up.worker_ready(w1)
    assert up.ports == {8000, 8001}
    # a rolling reload: the successor on the same port is ready, then the predecessor exits
    w0b = worker(server, 0, 8000, pid=2000)
    up.worker_ready(w0b)
    up.worker_exited(w0, 0)
    server.workers.remove(w0)
    assert up.ports == {8000, 8001}
    # a shrink: slot 1 exits for good
    up.worker_exited(w1, 0)
    server.workers.remove(w1)
    assert up.ports == {8000}
    # the last worker exits: the last non-empty list stays
    up.worker_exited(w0b, 0)
    assert ports_in((tmp_path / "upstream.conf").read_text()) == {8000}
    assert log.read_text().splitlines() == [":8000;", ":8000;:8001;", ":8000;"]


def test_crash_and_shutdown_keep_the_ports(tmp_path: Path, recorder) -> None:
    command, log = recorder
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command=command)
    server = SimpleNamespace(workers=[], state="running")
    w0, w1 = worker(server, 0, 8000), worker(server, 1, 8001)
    up.worker_ready(w0)
    up.worker_ready(w1)
    w1.stopping = False  # killed, not stopped: the master replaces it on the same socket
    server.workers.remove(w1)
    up.worker_exited(w1, -9)
    assert up.ports == {8000, 8001}
    server.state = "stopping"  # a shutdown: every worker exits, the file stays
    for w in (w0,):
        w.stopping = True
        server.workers.remove(w)
        up.worker_exited(w, 0)
    assert up.ports == {8000, 8001} and log.read_text().splitlines() == [":8000;:8001;"]


def test_hooks_with_attach_when_workers_have_no_server(tmp_path: Path) -> None:
    up = NginxUpstream(tmp_path / "upstream.conf", reload_command=None)
    lonely = SimpleNamespace(index=0, port=8000, ready=True, pid=1)
    with pytest.raises(RuntimeError, match="attach"):
        up.worker_ready(lonely)
    server = SimpleNamespace(workers=[lonely])
    assert up.attach(server) is up
    up.worker_ready(lonely)
    assert up.ports == {8000}


# --- a real nginx in front ------------------------------------------------------------------------


class Backend(http.server.ThreadingHTTPServer):
    """A tiny loopback HTTP server answering its own name."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        super().__init__(("127.0.0.1", 0), _NameHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _NameHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.name)))
        self.end_headers()
        self.wfile.write(self.server.name)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def backends():
    servers = [Backend("A"), Backend("B")]
    yield servers
    for server in servers:
        server.close()


def nginx_command(prefix: Path, *extra: str) -> list[str]:
    return [NGINX, "-p", str(prefix), "-c", "nginx.conf", "-e", "error.log", *extra]


@pytest.fixture
def nginx_prefix(tmp_path: Path):
    """A prefix dir with the example config on a free loopback port; stops the nginx started there."""
    port = free_port()
    prefix = prepare_prefix(tmp_path / "nginx", port)
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(nginx_command(prefix, "-g", "daemon off;"), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield SimpleNamespace(path=prefix, port=port, start=start)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        conn.close()


def wait_for_answer(port: int, wanted: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Poll nginx with a deadline until it answers `wanted` (nginx has no readiness message)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited: {proc.stderr.read().decode()}"
        try:
            last = get(port)
        except OSError as exc:
            last = repr(exc)
        if last == wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"nginx never answered {wanted!r}; last {last!r}")


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        assert time.monotonic() < deadline, f"nginx workers {pids} did not quit"
        time.sleep(0.02)


@pytest.mark.nginx
def test_real_nginx_follows_the_upstream_file(nginx_prefix, backends, caplog) -> None:
    a, b = backends
    up = NginxUpstream(nginx_prefix.path / "upstream.conf", name="prefork", keepalive=4,
                       reload_command=nginx_command(nginx_prefix.path, "-s", "reload"))
    up.sync([a.port])  # nginx is not running yet: its reload fails, and is only logged
    assert "reload command" in caplog.text
    nginx = nginx_prefix.start()
    wait_for_answer(nginx_prefix.port, "200 A", nginx)

    old_workers = children(nginx.pid)
    caplog.clear()
    assert up.sync([b.port]) is True and up.reloads == 2
    assert "reload command" not in caplog.text  # `nginx -s reload` succeeded
    wait_for_answer(nginx_prefix.port, "200 B", nginx)
    wait_until_gone(old_workers)  # nginx's previous workers still accept until they have quit
    assert {get(nginx_prefix.port) for _ in range(10)} == {"200 B"}

    assert up.sync([]) is False  # nobody ready: nginx keeps the last list
    assert up.sync([a.port, b.port]) is True
    deadline = time.monotonic() + 10
    seen: set[str] = set()
    while seen != {"200 A", "200 B"}:
        assert time.monotonic() < deadline, f"round robin never reached both: {seen}"
        seen.add(get(nginx_prefix.port))


@pytest.mark.nginx
def test_retries_a_dead_upstream(nginx_prefix, backends) -> None:
    """proxy_next_upstream: a port nobody listens on is skipped, the request still succeeds."""
    a, _ = backends
    dead = free_port()
    up = NginxUpstream(nginx_prefix.path / "upstream.conf", reload_command=None, keepalive=4)
    up.sync([dead, a.port])
    nginx = nginx_prefix.start()
    wait_for_answer(nginx_prefix.port, "200 A", nginx)
    assert [get(nginx_prefix.port) for _ in range(6)] == ["200 A"] * 6


# --- a real master keeping a real nginx's upstream -----------------------------------------------

MASTER_WITH_UPSTREAM = """
from prefork.upstream import NginxUpstream
up = NginxUpstream({upstream!r}, name="prefork", keepalive=4, reload_command={command!r})
Server(app, workers=2, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid"),
       worker_ready=up.worker_ready, worker_exited=up.worker_exited).start()
"""


def pids_through(port: int, count: int) -> set[str]:
    """The worker pids that answer `count` requests through nginx (empty while nginx starts)."""
    try:
        answers = [get(port) for _ in range(count)]
    except OSError:
        return set()
    assert all(a.startswith("200 ") for a in answers), answers
    return {a.split()[1] for a in answers}


@pytest.mark.nginx
def test_master_hooks_keep_nginx_in_step(master, nginx_prefix, tmp_path: Path) -> None:
    from prefork.ctl import call, socket_path
    from tests.prefork.prefork_testutil import wait_until

    upstream = nginx_prefix.path / "upstream.conf"
    command = nginx_command(nginx_prefix.path, "-s", "reload")
    running = master(MASTER_WITH_UPSTREAM.format(upstream=str(upstream), command=command), ports=3)
    running.wait_ready()
    wait_until(lambda: upstream.exists() and ports_in(upstream.read_text()) == {running.port, running.port + 1},
               what="the upstream file listing both workers")
    # Two changes (one port, then two), two runs of `nginx -s reload` (the second queued behind the
    # first, never waited for by the master): both fail, nginx is not running yet.
    running.wait_log(r"upstream reload command .* exited 1", count=2)
    before_nginx = len(running.log())
    nginx = nginx_prefix.start()
    deadline = time.monotonic() + 10
    while len(pids_through(nginx_prefix.port, 4)) < 2:  # nginx has no readiness message: poll
        assert time.monotonic() < deadline and nginx.poll() is None, "nginx never balanced both workers"
        time.sleep(0.02)

    ctl = socket_path(tmp_path / "app.pid")
    call(ctl, "workers", 3)
    wait_until(lambda: ports_in(upstream.read_text()) == {running.port + i for i in range(3)},
               what="the third worker in the upstream file")
    wait_until(lambda: len(pids_through(nginx_prefix.port, 6)) == 3, what="nginx balancing 3 workers")

    before = upstream.read_text()
    generation = call(ctl, "reload")["generation"]
    wait_until(lambda: {w["generation"] for w in call(ctl, "status")["workers"]} == {generation + 1},
               what="the reload")
    assert upstream.read_text() == before  # same ports: no rewrite, no nginx reload

    call(ctl, "workers", 1)
    wait_until(lambda: ports_in(upstream.read_text()) == {running.port}, what="the shrink in the upstream file")
    wait_until(lambda: len(pids_through(nginx_prefix.port, 4)) == 1, what="nginx on one worker")
    assert "WARNING prefork.upstream" not in running.log()[before_nginx:]  # every later reload worked


# --- examples/nginx/README.md, block by block -------------------------------------------------------

import re  # noqa: E402
import textwrap  # noqa: E402

README = ROOT / "examples" / "nginx" / "README.md"
VENV_BIN = Path(sys.executable).parent


def readme_blocks(language: str) -> list[str]:
    """The README's fenced blocks in `language`, dedented (some sit inside list items)."""
    pattern = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(m.group(3)) for m in pattern.finditer(README.read_text()) if m.group(2) == language]


def nginx_master_pid(prefix: Path) -> int | None:
    try:
        return int((prefix / "nginx.pid").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def readme_run(tmp_path: Path):
    """Run README shell blocks with ports and $PWD/nginx-run moved into the test's own space."""
    from tests.prefork.prefork_testutil import port_block

    prefix = tmp_path / "nginx-run"
    base, front = port_block(4), free_port()
    env = {**os.environ, "DIR": str(prefix), "PATH": f"{VENV_BIN}:/usr/sbin:/sbin:{os.environ['PATH']}"}
    sessions: list[subprocess.Popen] = []

    def substitute(block: str) -> str:
        return block.replace("$PWD/nginx-run", str(prefix)).replace("8000", str(base)).replace("8080", str(front))

    def run(block: str, background: bool = False) -> subprocess.CompletedProcess | None:
        proc = subprocess.Popen(["bash", "-euc", substitute(block)], cwd=ROOT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if not background else
                                open(tmp_path / "prefork.log", "wb"), stderr=subprocess.STDOUT, text=not background)
        sessions.append(proc)
        if background:
            return None
        out, _ = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)

    yield SimpleNamespace(prefix=prefix, base=base, front=front, run=run, log=tmp_path / "prefork.log")
    nginx = nginx_master_pid(prefix)
    for pgid in [p.pid for p in sessions] + ([nginx] if nginx else []):
        try:
            os.killpg(pgid, signal.SIGKILL)  # nginx daemonizes into a session (and group) of its own
        except (ProcessLookupError, PermissionError):
            pass
    for proc in sessions:
        proc.wait(10)


@pytest.mark.nginx
def test_examples_nginx_readme_step_by_step(readme_run) -> None:
    from tests.prefork.prefork_testutil import process_gone, wait_until

    prepare, start_prefork, start_nginx, grow, stop = readme_blocks("sh")
    prefix = readme_run.prefix
    assert readme_run.run(prepare).returncode == 0
    conf = prefix / "nginx.conf"
    conf.write_text(conf.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{readme_run.front}"))

    readme_run.run(start_prefork, background=True)
    upstream = prefix / "upstream.conf"
    ports = {readme_run.base + i for i in range(3)}
    wait_until(lambda: upstream.exists() and ports_in(upstream.read_text()) == ports, timeout=20,
               what=f"upstream.conf with 3 ports; log:\n{readme_run.log.read_text()}")

    result = readme_run.run(start_nginx)
    assert result.returncode == 0 and "myproject" in result.stdout, result.stdout
    nginx = nginx_master_pid(prefix)
    workers_before = children(nginx)

    assert readme_run.run(grow).returncode == 0
    wait_until(lambda: ports_in(upstream.read_text()) == ports | {readme_run.base + 3}, what="4 ports")
    # the reload command worked: nginx replaced its worker processes
    wait_until(lambda: children(nginx) and not children(nginx) & workers_before, what="nginx reloaded")
    assert get(readme_run.front).startswith("200 ")

    master_pid = int((prefix / "app.pid").read_text())
    assert readme_run.run(stop).returncode == 0
    wait_until(lambda: process_gone(master_pid), timeout=20, what=f"prefork stopped:\n{readme_run.log.read_text()}")
    wait_until(lambda: process_gone(nginx), timeout=20, what="nginx stopped")


def test_examples_nginx_readme_python_and_fragments(tmp_path: Path) -> None:
    from prefork import Server

    (python,) = readme_blocks("python")
    namespace: dict = {}
    exec(python.replace("/etc/nginx/prefork-upstream.conf", str(tmp_path / "up.conf")), namespace)
    up, server = namespace["up"], namespace["server"]
    assert isinstance(server, Server) and (server.port, server.num_workers) == (8000, 3)
    assert (up.name, up.reload_command) == ("myapp", ["nginx", "-s", "reload"])

    upstream_file, several_hosts = readme_blocks("nginx")
    assert upstream_file == render([8000, 8001, 8002], "prefork", keepalive=16, server_options="max_fails=0")

    # the several-hosts block, with fragments written by NginxUpstream(name=None), passes nginx -t
    for name, host in (("app1", "10.0.0.11"), ("app2", "10.0.0.12")):
        NginxUpstream(tmp_path / f"upstream-{name}.conf", name=None, host=host, reload_command=None).sync([8000])
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid; events {}\nhttp {\n" + several_hosts
        + "server { listen 127.0.0.1:1; location / { proxy_pass http://prefork; } } }\n")
    result = nginx_test(tmp_path)
    assert result.returncode == 0, result.stderr
