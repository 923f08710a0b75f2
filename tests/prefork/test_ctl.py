"""prefork.ctl: the operator's control socket, its client and `prefork ctl`.

The master side runs against tests/prefork/fake_server.py (a stand-in for Server with a real selectors
loop); sockets, clients and subprocesses are real. tests/prefork/test_ctl_server.py drives a real Server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from prefork.control import FrameReader, encode_frame, recv_message, request, send_message
from prefork.ctl import (
    COMMANDS,
    ControlServer,
    CtlError,
    CtlTimeout,
    ErrorReply,
    NoMasterError,
    call,
    ctl_main,
    socket_path,
)
from tests.prefork.fake_server import FakeServer

ROOT = Path(__file__).resolve().parents[2]


def serve_ctl(server: FakeServer, tmp_path: Path):
    """Serve a ControlServer at <tmp>/app.pid.ctl from ``server``'s loop; yield both; clean up."""
    ctl = ControlServer(server, socket_path(tmp_path / "app.pid")).open()
    server.start()
    yield server, ctl
    server.stop()
    ctl.close()
    server.close()
    assert not server.loop_errors


@pytest.fixture
def served(tmp_path: Path):
    """A FakeServer whose loop serves a ControlServer at <tmp>/app.pid.ctl."""
    yield from serve_ctl(FakeServer(workers=2), tmp_path)


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def ask(sock: socket.socket, reader: FrameReader, message_bytes: bytes) -> dict:
    sock.sendall(message_bytes)
    return recv_message(sock, reader, timeout=5)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)  # polling a condition with a deadline, not synchronising on a sleep


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- the socket file --------------------------------------------------------------------------


def test_socket_is_mode_0600_and_removed_on_close(tmp_path: Path) -> None:
    server = FakeServer()
    path = socket_path(tmp_path / "app.pid")
    assert path == str(tmp_path / "app.pid.ctl")
    ctl = ControlServer(server, path).open()
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    ctl.close()
    server.close()
    assert not os.path.exists(path)


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "app.pid.ctl")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: what a SIGKILLed master leaves
    server = FakeServer()
    ctl = ControlServer(server, path).open()
    server.start()
    try:
        assert call(path, "help")["status"]
    finally:
        server.stop()
        ctl.close()
        server.close()


def test_refuses_when_a_live_master_answers(served) -> None:
    _, ctl = served
    with pytest.raises(CtlError, match="another master"):
        ControlServer(FakeServer(), ctl.path).open()
    assert call(ctl.path, "help")  # the live one is untouched


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "app.pid.ctl"
    path.write_text("precious")
    with pytest.raises(CtlError, match="not a socket"):
        ControlServer(FakeServer(), path).open()
    assert path.read_text() == "precious"


def test_open_errors_are_one_line_control_socket_errors(tmp_path: Path) -> None:
    from prefork.ctl import ControlSocketError

    for path, reason in ((tmp_path / "no-such-dir" / "app.pid.ctl", "No such file or directory"),
                         (tmp_path / ("x" * 120 + ".ctl"), "path too long")):
        with pytest.raises(ControlSocketError) as caught:
            ControlServer(FakeServer(), path).open()
        error = caught.value
        assert isinstance(error, OSError) and isinstance(error, CtlError)
        assert str(error).startswith(f"cannot open the control socket {path}: ") and reason in str(error)
        assert "\n" not in str(error)


def run_master_cli(tmp_path: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """``python -m prefork`` in its own session (killed by process group if it outlives ``timeout``)."""
    (tmp_path / "app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n")
    proc = subprocess.Popen([sys.executable, "-m", "prefork", "app:app", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_taken_control_socket_path_stops_the_cli_with_one_line(tmp_path: Path, kind: str) -> None:
    # Used to escape as a CtlError traceback from Server.start(); now the CLI's one-line report.
    from tests.integration.integration_util import free_ports

    taken = tmp_path / "app.pid.ctl"
    if kind == "file":
        taken.write_text("precious")
    else:
        taken.mkdir()
    result = run_master_cli(tmp_path, "--workers", "1", "--host", "127.0.0.1", "--port", str(free_ports(1)),
                            "--pid", str(tmp_path / "app.pid"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"prefork: {taken} exists and is not a socket; refusing to replace it\n" in result.stderr
    assert not (tmp_path / "app.pid").exists()  # the failed start cleaned up after itself
    assert taken.read_text() == "precious" if kind == "file" else taken.is_dir()


# --- commands -----------------------------------------------------------------------------------


def test_status_rows(served) -> None:
    server, ctl = served
    status = call(ctl.path, "status")
    assert status["master_pid"] == os.getpid() and status["generation"] == 1
    rows = status["workers"]
    assert [(r["slot"], r["pid"], r["port"], r["generation"]) for r in rows] == [
        (0, 40000, 8000, 1), (1, 40001, 8001, 1)]
    assert [(r["served"], r["in_flight"], r["rss"]) for r in rows] == [
        (0, 0, 25 * 2**20), (10, 1, 25 * 2**20)]
    assert all(0 <= r["uptime"] < 60 and r["ready"] for r in rows)
    assert server.broadcasts == [("stats", ())]


def test_stats_is_raw_per_slot(served) -> None:
    _, ctl = served
    stats = call(ctl.path, "stats")
    assert stats["1"] == {"ok": True, "result": {"pid": 40001, "port": 8001, "requests_served": 10,
                                                  "requests_in_flight": 1, "rss": 25 * 2**20}}


def test_reload_and_workers(served) -> None:
    server, ctl = served
    assert call(ctl.path, "reload")["reload"] == "requested"
    assert call(ctl.path, "workers", 4) == {"workers": 4}
    assert call(ctl.path, "workers", "0") == {"workers": 0}
    assert server.reloads == 1 and server.worker_counts == [4, 0]


@pytest.mark.parametrize("args", [[], ["three"], [3.5], [True], [-1], [10**6], [None], [[1]], [1, 2], ["-1"]])
def test_workers_rejects_bad_arguments(served, args) -> None:
    server, ctl = served
    with pytest.raises(ErrorReply, match="workers"):
        call(ctl.path, "workers", *args)
    assert server.worker_counts == []


def test_command_broadcasts_with_per_slot_results(served) -> None:
    server, ctl = served
    assert call(ctl.path, "command", "echo", "a", 1) == {
        "0": {"ok": True, "result": ["a", 1]}, "1": {"ok": True, "result": ["a", 1]}}
    failed = call(ctl.path, "command", "nosuch")
    assert failed["0"] == {"ok": False, "error": "LookupError: unknown command 'nosuch'"}
    with pytest.raises(ErrorReply, match="usage: command NAME"):
        call(ctl.path, "command")
    with pytest.raises(ErrorReply, match="usage: command NAME"):
        call(ctl.path, "command", 42)
    assert server.broadcasts == [("echo", ("a", 1)), ("nosuch", ())]


def test_unknown_command_lists_the_commands(served) -> None:
    _, ctl = served
    with pytest.raises(ErrorReply) as info:
        call(ctl.path, "restart")
    assert "unknown command 'restart'" in str(info.value)
    for name in COMMANDS:
        assert name in str(info.value)
    assert set(call(ctl.path, "help")) == {c.usage for c in COMMANDS.values()}
    with pytest.raises(ErrorReply, match="takes no arguments"):
        call(ctl.path, "reload", "now")


def test_command_error_has_one_meaning() -> None:
    # prefork.ctl had a CommandError of its own (a refused ctl request), unrelated to
    # prefork.CommandError (a worker command that failed): `except CommandError` caught one or the
    # other depending on the import. The ctl's is BadRequest now; every CommandError is the worker's.
    import importlib
    import pkgutil

    import prefork
    from prefork.ctl import BadRequest
    from prefork.ctl.commands import cmd_workers

    found = {}
    for info in pkgutil.walk_packages(prefork.__path__, "prefork."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, Exception) and value.__name__ == "CommandError":
                found[f"{info.name}.{name}"] = value
    assert found and set(found.values()) == {prefork.CommandError}, found
    with pytest.raises(BadRequest, match="workers N"):
        cmd_workers(FakeServer(), ["many"])
    assert not issubclass(BadRequest, prefork.CommandError)


# --- hostile input ------------------------------------------------------------------------------


def test_bad_frames_get_error_replies_and_change_nothing(served) -> None:
    server, ctl = served
    with connect(ctl.path) as sock:
        reader = FrameReader()
        for body in (b"{oops", b"\xff\xfe\xfd", b"[1,2]", b"null", b"[" * 50_000,
                     b'{"command": 7}', b'{"command": "workers", "args": "4"}'):
            reply = ask(sock, reader, struct.pack(">I", len(body)) + body)
            assert reply["ok"] is False and reply["error"], body[:20]
        # the connection still works after all that
        reply = ask(sock, reader, encode_frame(request(5, "help")))
        assert reply["ok"] is True and reply["id"] == 5
        # an oversized frame is refused before it is read, then the connection is closed
        reply = ask(sock, reader, struct.pack(">I", 1 << 30))
        assert reply["ok"] is False and "exceeds" in reply["error"]
        assert sock.recv(1) == b""
    assert server.reloads == 0 and server.worker_counts == []
    wait_for(lambda: not ctl.connections)


def test_random_bytes_never_crash_the_master(served) -> None:
    server, ctl = served
    rng = random.Random(1234)
    for _ in range(50):
        with connect(ctl.path) as sock:
            sock.sendall(rng.randbytes(rng.randrange(1, 2000)))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # error replies, then the master closes (or waits for more)
                pass
    wait_for(lambda: not ctl.connections)
    assert call(ctl.path, "status")["workers"]
    assert server.reloads == 0 and server.worker_counts == []


def test_truncated_frame_and_vanishing_clients(served) -> None:
    _, ctl = served
    for cut in (1, 3, 4, 10):
        with connect(ctl.path) as sock:
            sock.sendall(encode_frame(request(1, "status"))[:cut])
    wait_for(lambda: not ctl.connections)
    assert call(ctl.path, "help")


def test_burst_of_10000_requests_each_answered_memory_flat(served) -> None:
    server, ctl = served
    batch = b"".join(
        encode_frame(request(i, "workers" if i % 3 else "nope", ["x"])) for i in range(10_000))

    def burst() -> list[dict]:
        with connect(ctl.path) as sock:
            sender = threading.Thread(target=sock.sendall, args=(batch,))
            sender.start()
            reader = FrameReader()
            replies = [recv_message(sock, reader, timeout=10) for _ in range(10_000)]
            sender.join()
        return replies

    replies = burst()
    assert [r["id"] for r in replies] == list(range(10_000))
    assert all(r["ok"] is False for r in replies)
    assert "unknown command" in replies[0]["error"] and "integer" in replies[1]["error"]
    before = rss_kib(os.getpid())
    for _ in range(3):
        assert len(burst()) == 10_000
    assert rss_kib(os.getpid()) - before < 8 * 1024  # flat: no per-request state is kept
    wait_for(lambda: not ctl.connections)
    assert server.worker_counts == []


def test_client_that_never_reads_is_dropped_without_stalling_others(served, caplog) -> None:
    _, ctl = served
    hog = connect(ctl.path)
    try:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # ask for many replies and read none: the master's send buffer fills up
        batch = b"".join(encode_frame(request(i, "help")) for i in range(20_000))
        try:
            hog.sendall(batch)
        except OSError:
            pass  # the master may already have hung up on us
        start = time.monotonic()
        assert call(ctl.path, "help", timeout=5)  # the loop still answers others
        assert time.monotonic() - start < 5
        wait_for(lambda: not ctl.connections)
        assert "does not read its replies" in caplog.text
    finally:
        hog.close()


def test_too_many_connections_are_refused(tmp_path: Path) -> None:
    server = FakeServer()
    ctl = ControlServer(server, tmp_path / "x.ctl", max_connections=3).open()
    server.start()
    held = [connect(ctl.path) for _ in range(3)]
    try:
        wait_for(lambda: len(ctl.connections) == 3)
        with pytest.raises(ErrorReply, match="too many"):
            call(ctl.path, "help")
        held.pop().close()
        wait_for(lambda: len(ctl.connections) == 2)
        assert call(ctl.path, "help")
    finally:
        for sock in held:
            sock.close()
        server.stop()
        ctl.close()
        server.close()


# --- peers of another uid (needs root to become another user) -----------------------------------

NOBODY, OTHER = 65534, 65533  # two unprivileged uids


def _drop_to(uid: int) -> None:
    """In a forked child: become ``uid`` (group too, no supplementary groups), in a session of its own."""
    os.setsid()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _client_verdict(path: str) -> str:
    """What the control socket says to this process: "ok", "EACCES", or the error reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
    except PermissionError:
        return "EACCES"
    try:
        sock.sendall(encode_frame(request(1, "workers", [0])))
    except BrokenPipeError:
        pass  # refused before we spoke: the error reply is already waiting
    reply = recv_message(sock, FrameReader(), 5)
    return "ok" if reply["ok"] else reply["error"]


def in_child(uid: int, work) -> str:
    """Fork (the interpreter may not be readable by the uid, so no exec), become ``uid``, return
    what ``work()`` returned there. The child is killed by process group afterwards."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _drop_to(uid)
            os.write(write_end, str(work()).encode())
        except BaseException as exc:  # make a failure readable in the parent's assertion
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            return pipe.read().decode()  # EOF when the child exits
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def run_as_nobody(path: str) -> str:
    """What the control socket says to a client of uid 65534."""
    return in_child(NOBODY, lambda: _client_verdict(path))


def traversable_dir(owner: int = 0) -> str:
    """A directory anyone may traverse (pytest's tmp_path is inside a 0700 one), owned by ``owner``."""
    where = tempfile.mkdtemp(prefix="prefork-ctl-")
    os.chown(where, owner, owner)
    os.chmod(where, 0o711)
    return where


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_other_uid_is_refused() -> None:
    # only the socket's own mode and SO_PEERCRED stand in the way
    where = traversable_dir()
    server = FakeServer()
    ctl = ControlServer(server, os.path.join(where, "app.pid.ctl")).open()
    server.start()
    try:
        assert run_as_nobody(ctl.path) == "EACCES"  # mode 0600 keeps it out
        os.chmod(ctl.path, 0o666)  # an operator's mistake: SO_PEERCRED still refuses
        assert run_as_nobody(ctl.path).startswith("permission denied: uid 65534")
        assert server.worker_counts == []
    finally:
        server.stop()
        ctl.close()
        server.close()
        os.rmdir(where)


def _serve_ctl_as_this_uid(path: str, stop_fd: int, report_fd: int) -> None:
    """In a child that became another uid: serve a ControlServer at ``path``; say "ready" on
    ``report_fd``; when ``stop_fd`` reaches EOF, report the ``workers`` counts it was asked for."""
    server = FakeServer()
    ctl = ControlServer(server, path).open()
    server.start()
    os.chmod(path, 0o666)  # the mode admits everyone: only SO_PEERCRED decides
    os.write(report_fd, b"ready")
    os.read(stop_fd, 1)  # until the test closes its end
    server.stop()
    ctl.close()
    server.close()
    os.write(report_fd, str(server.worker_counts).encode())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become other uids (CI runs as root)")
def test_a_master_of_another_uid_admits_its_own_uid_and_root_only() -> None:
    # The test above runs the master as root, where "not the master's uid" and "not root" are the
    # same refusal: a check that only refused non-root peers would pass it. Here the master is uid
    # 65534 (a forked child that setuid'd): its own uid and root get in, uid 65533 does not.
    where = traversable_dir(owner=NOBODY)
    path = os.path.join(where, "app.pid.ctl")
    stop_r, stop_w = os.pipe()
    report_r, report_w = os.pipe()
    master_pid = os.fork()
    if master_pid == 0:
        try:
            os.close(stop_w)
            os.close(report_r)
            _drop_to(NOBODY)
            _serve_ctl_as_this_uid(path, stop_r, report_w)
        except BaseException as exc:
            os.write(report_w, f"master failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(stop_r)
    os.close(report_w)
    try:
        assert os.read(report_r, 200) == b"ready"
        assert os.stat(path).st_uid == NOBODY
        assert in_child(NOBODY, lambda: _client_verdict(path)) == "ok"  # the master's own uid
        assert in_child(OTHER, lambda: _client_verdict(path)) == "permission denied: uid 65533 is not 65534"
        assert _client_verdict(path) == "ok"  # root, from this process
        os.close(stop_w)  # the master child stops and reports what it was asked to do
        stop_w = -1
        assert os.read(report_r, 200) == b"[0, 0]"  # exactly the two admitted `workers 0` requests
    finally:
        for fd in (stop_w, report_r):
            if fd >= 0:
                os.close(fd)
        try:
            os.killpg(master_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(master_pid, 0)
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(where)


# --- the client -----------------------------------------------------------------------------------


def test_call_without_master(tmp_path: Path) -> None:
    with pytest.raises(NoMasterError, match="no master"):
        call(tmp_path / "nothing.ctl", "status")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "dead.ctl"))
    dead.close()
    with pytest.raises(NoMasterError):
        call(tmp_path / "dead.ctl", "status")


def test_call_times_out_on_a_silent_master(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.ctl"))
    silent.listen(1)  # accepts into the backlog, never answers
    try:
        start = time.monotonic()
        with pytest.raises(CtlTimeout):
            call(tmp_path / "silent.ctl", "status", timeout=0.3)
        assert time.monotonic() - start < 5
    finally:
        silent.close()


def test_ctl_main_in_process(served, capsys) -> None:
    server, ctl = served
    pid_file = ctl.path[: -len(".ctl")]
    assert ctl_main(["--pid", pid_file, "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"master pid {os.getpid()}, generation 1, 2 workers")
    assert out[1].split() == ["SLOT", "PID", "PORT", "GEN", "UPTIME", "SERVED", "INFLIGHT", "RSS"]
    assert out[3].split()[:4] == ["1", "40001", "8001", "1"] and out[3].split()[5:] == ["10", "1", "25.0M"]
    assert ctl_main(["--socket", ctl.path, "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["0"]["result"]["port"] == 8000
    assert ctl_main(["--pid", pid_file, "command", "nosuch"]) == 1
    assert ctl_main(["--pid", pid_file, "workers", "5000"]) == 1
    assert "between 0 and" in capsys.readouterr().err
    assert ctl_main(["--pid", pid_file, "workers", "x"]) == 2
    assert ctl_main(["--pid", pid_file]) == 2
    assert ctl_main(["status"]) == 2
    assert ctl_main(["--pid", pid_file + ".gone", "status"]) == 3
    assert ctl_main(["--pid", pid_file, "workers", "3"]) == 0
    assert server.worker_counts == [3]


def run_ctl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "prefork.ctl", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_python_m_prefork_ctl(served) -> None:
    server, ctl = served
    pid_file = ctl.path[: -len(".ctl")]
    result = run_ctl("--pid", pid_file, "status")
    assert result.returncode == 0, result.stderr
    assert "SLOT" in result.stdout and "40001" in result.stdout
    result = run_ctl("--pid", pid_file, "reload")
    assert result.returncode == 0 and server.reloads == 1
    assert run_ctl("--pid", pid_file, "workers").returncode == 2
    result = run_ctl("--pid", pid_file + ".nope", "status")
    assert result.returncode == 3 and "no master" in result.stderr


# --- a real master (prefork.Server in a subprocess) ------------------------------------------------

from tests.prefork.prefork_testutil import http_get, wait_until  # noqa: E402

REAL_MASTER = """
Server(app, workers=2, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid")).start()
"""


class NotifyListener:
    """A real datagram socket standing in for systemd: collects what the master announces."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def wait_for(self, state: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while state not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {state} from the master; got {self.seen}"
            self.sock.settimeout(remaining)
            self.seen.extend(self.sock.recv(4096).decode().splitlines())


def ctl_status(path: str) -> dict:
    return call(path, "status", timeout=10)


def test_real_master(master, tmp_path: Path, monkeypatch) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    running = master(REAL_MASTER, ports=3)
    try:
        running.wait_ready()
        listener.wait_for("READY=1")
        path = socket_path(tmp_path / "app.pid")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        for _ in range(3):
            assert http_get(running.port)[0] == 200

        result = run_ctl("--pid", str(tmp_path / "app.pid"), "status")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"master pid {running.pid}, generation 0, 2 workers")
        slot0 = lines[2].split()
        assert slot0[0] == "0" and slot0[2] == str(running.port) and int(slot0[5]) >= 3
        assert slot0[7].endswith("M")  # RSS in MiB

        assert call(path, "command", "ping") == {"0": {"ok": True, "result": "pong"},
                                                 "1": {"ok": True, "result": "pong"}}
        stats = json.loads(run_ctl("--pid", str(tmp_path / "app.pid"), "stats").stdout)
        assert stats["1"]["result"]["port"] == running.port + 1

        # hostile input: the master answers each bad request, keeps serving, memory stays flat
        hostile_round(path)
        before = rss_kib(running.pid)
        for _ in range(3):
            hostile_round(path)
        assert rss_kib(running.pid) - before < 8 * 1024
        assert http_get(running.port)[0] == 200
        assert len(ctl_status(path)["workers"]) == 2

        assert call(path, "workers", 3) == {"workers": 3}
        wait_until(lambda: [w["ready"] for w in ctl_status(path)["workers"]] == [True] * 3, what="3 workers")
        assert http_get(running.port + 2)[0] == 200

        generation = call(path, "reload")["generation"]
        listener.wait_for("RELOADING=1")
        wait_until(lambda: {w["generation"] for w in ctl_status(path)["workers"]} == {generation + 1},
                   what="every worker on the new generation")

        # a stopped (hung) worker: status waits for its stats without blocking the master loop
        frozen = ctl_status(path)["workers"][0]["pid"]
        os.kill(frozen, signal.SIGSTOP)
        try:
            slow: dict = {}
            waiter = threading.Thread(target=lambda: slow.update(ctl_status(path)))
            waiter.start()
            start = time.monotonic()
            assert call(path, "help", timeout=5) and time.monotonic() - start < 1.0
            waiter.join(15)
            rows = {row["pid"]: row for row in slow["workers"]}
            assert "error" in rows[frozen] and rows[frozen]["served"] is None
            assert all(row["served"] is not None for pid, row in rows.items() if pid != frozen)
        finally:
            os.kill(frozen, signal.SIGCONT)

        assert "Traceback" not in running.log()
        running.signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert running.wait_exit() == 0
        assert not os.path.exists(path)
    finally:
        listener.sock.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the master hung up on us: what a client that never reads gets


def test_clients_that_never_read_never_stall_the_master(master, tmp_path: Path) -> None:
    # The master used to wait (select, up to 0.5 s) for each such client to read; several of them
    # froze it for seconds. Replies are now written when the socket is writable, from the loop.
    running = master(REAL_MASTER, ports=2)
    running.wait_ready()
    path = socket_path(tmp_path / "app.pid")
    hogs = [connect(path) for _ in range(6)]
    try:
        for hog in hogs:
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # each asks for ~8 MiB of replies (20,000 x help) and reads none
        batch = b"".join(encode_frame(request(i, "help")) for i in range(20_000))
        senders = [threading.Thread(target=_send_quietly, args=(hog, batch), daemon=True) for hog in hogs]
        victim = ctl_status(path)["workers"][0]["pid"]
        for sender in senders:
            sender.start()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced_after = None
        worst = 0.0
        while time.monotonic() - killed < 3.0:  # a window of measurements while the hogs push
            start = time.monotonic()
            assert call(path, "help", timeout=5)
            worst = max(worst, time.monotonic() - start)
            # (status waits for the workers' stats, a booting replacement's too: not timed)
            rows = call(path, "status", timeout=5)["workers"]
            if replaced_after is None and any(r["slot"] == 0 and r["pid"] != victim and r["ready"] for r in rows):
                replaced_after = time.monotonic() - killed
        assert worst < 0.3, f"a help took {worst:.2f} s while clients did not read"
        assert replaced_after is not None and replaced_after < 1.0, f"slot 0 replaced after {replaced_after}"
        running.wait_log(r"dropping a client that does not read its replies", count=len(hogs))
        for sender in senders:
            sender.join(10)
        assert "Traceback" not in running.log()
    finally:
        for hog in hogs:
            hog.close()


HIGH_FD_MASTER = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = [os.dup(0) for _ in range(1100)]  # every descriptor opened from now on is >= 1024
""" + REAL_MASTER


def test_a_stalled_client_is_dropped_by_a_timer(master, tmp_path: Path) -> None:
    # Output below the 4 MiB limit that does not move for send_timeout (0.5 s): dropped by a timer
    # of the master loop, which meanwhile answers everyone else at once. The client's descriptor is
    # above 1024, where select() (the old wait for a slow client) cannot go.
    running = master(HIGH_FD_MASTER, ports=2)
    running.wait_ready()
    path = socket_path(tmp_path / "app.pid")
    with connect(path) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"".join(encode_frame(request(i, "help")) for i in range(3_000)))  # ~1.2 MB of replies
        start = time.monotonic()
        assert call(path, "help", timeout=5) and time.monotonic() - start < 0.3
        line = running.wait_log(r"dropping a client that does not read its replies \(\d+ bytes unread for "
                                r"[\d.]+ s\)", timeout=5)
        assert line and "Traceback" not in running.log()
        hog.settimeout(5)
        try:
            while hog.recv(65536):  # what was sent before the drop, then EOF
                pass
        except ConnectionResetError:
            pass


def test_a_worker_forked_while_a_client_waits_keeps_no_copy_of_it(master, tmp_path: Path) -> None:
    # A client whose replies wait is not read meanwhile (no io handler of the loop); a worker forked
    # then must still close its copy, or the client never sees the master hang up on it.
    running = master(REAL_MASTER, ports=2)
    running.wait_ready()
    path = socket_path(tmp_path / "app.pid")
    with connect(path) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"".join(encode_frame(request(i, "help")) for i in range(3_000)))
        victim = ctl_status(path)["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)  # its replacement is forked while the hog's replies wait
        running.wait_log(rf"spawned worker 0 \(pid (?!{victim}\b)\d+", timeout=5)
        running.wait_log(r"dropping a client that does not read its replies", timeout=5)
        hog.settimeout(5)
        try:
            while hog.recv(65536):  # what was sent before the drop, then EOF: nobody else holds it
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("the dropped connection stayed open: a worker holds a copy") from None


def hostile_round(path: str) -> None:
    """10,000 bad requests in a burst, then random bytes on fresh connections."""
    batch = b"".join(encode_frame({"id": i, "command": ["bad"], "args": 1}) for i in range(10_000))
    with connect(path) as sock:
        sender = threading.Thread(target=sock.sendall, args=(batch,))
        sender.start()
        reader = FrameReader()
        replies = [recv_message(sock, reader, timeout=10) for _ in range(10_000)]
        sender.join()
    assert all(r["ok"] is False for r in replies) and replies[-1]["id"] == 9_999
    rng = random.Random(7)
    for _ in range(20):
        with connect(path) as sock:
            sock.sendall(struct.pack(">I", rng.randrange(1 << 32)) + rng.randbytes(100))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass


# --- docs/operations.md: every block is run or checked ---------------------------------------------

import configparser  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402

from prefork.ctl import format_status  # noqa: E402

OPERATIONS = ROOT / "docs" / "operations.md"
DOC_PID = "/run/myapp/app.pid"


def doc_blocks(language: str) -> list[str]:
    pattern = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [m.group(2) for m in pattern.finditer(OPERATIONS.read_text()) if m.group(1) == language]


def test_operations_doc_blocks(served) -> None:
    server, ctl = served
    pid_file = ctl.path[: -len(".ctl")]

    (commands,) = doc_blocks("sh")
    for line in commands.splitlines():
        argv = shlex.split(line.replace(DOC_PID, pid_file))
        assert argv[:2] == ["prefork", "ctl"]
        with contextlib.redirect_stdout(io.StringIO()):
            assert ctl_main(argv[2:]) == 0, line
    assert server.reloads == 1 and server.worker_counts == [4]

    (table,) = doc_blocks("text")
    rows = [{"slot": 0, "pid": 4790, "port": 8000, "generation": 3, "uptime": 125.4, "served": 1520,
             "in_flight": 1, "rss": int(31.6 * 2**20)},
            {"slot": 1, "pid": 4791, "port": 8001, "generation": 3, "uptime": 125.9, "served": 1498,
             "in_flight": 0, "rss": int(31.2 * 2**20)}]
    assert format_status({"master_pid": 4711, "generation": 3, "workers": rows}) + "\n" == table

    client, raw = doc_blocks("python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(client.replace(DOC_PID, pid_file), {})
        exec(raw.replace(DOC_PID, pid_file), {})
    assert out.getvalue() == ("[(0, 40000, 8000), (1, 40001, 8001)]\n"
                              "workers N: N must be an integer >= 0, got 'many'\n")
    assert server.worker_counts == [4, 3]

    (unit_text,) = doc_blocks("ini")
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read_string(unit_text)
    service = unit["Service"]
    assert service["Type"] == "notify" and service["KillSignal"] == "SIGQUIT"
    start = shlex.split(service["ExecStart"])
    assert start[start.index("--pid") + 1] == DOC_PID
    from prefork.cli import build_parser
    parsed = build_parser().parse_args(start[1:])  # the CLI accepts the unit's ExecStart
    assert (parsed.workers, parsed.port, parsed.pid) == (4, 8000, DOC_PID)
    reload_argv = shlex.split(service["ExecReload"].replace(DOC_PID, pid_file))
    assert reload_argv[1:3] == ["ctl", "--pid"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert ctl_main(reload_argv[2:]) == 0
    assert server.reloads == 2


# --- asynchronous commands: the master loop never waits for the workers ---------------------------

from tests.prefork.fake_server import AsyncFakeServer  # noqa: E402


@pytest.fixture
def served_async(tmp_path: Path):
    """The same, with workers that answer later (broadcast_async)."""
    yield from serve_ctl(AsyncFakeServer(workers=2), tmp_path)


def test_async_replies_keep_request_order(served_async) -> None:
    server, ctl = served_async
    with connect(ctl.path) as sock:
        sock.sendall(encode_frame(request(1, "status")) + encode_frame(request(2, "help"))
                     + encode_frame(request(3, "stats")))
        wait_for(lambda: len(server.held) == 2)
        # the loop is free while the workers "think": another client is answered at once
        assert call(ctl.path, "workers", 2) == {"workers": 2}
        server.release()
        reader = FrameReader()
        replies = [recv_message(sock, reader, timeout=5) for _ in range(3)]
    assert [(r["id"], r["ok"]) for r in replies] == [(1, True), (2, True), (3, True)]
    assert replies[0]["result"]["workers"][1]["served"] == 10
    assert replies[2]["result"]["0"]["result"]["port"] == 8000


def test_in_flight_limit_per_connection(served_async) -> None:
    server, ctl = served_async
    with connect(ctl.path) as sock:
        sock.sendall(b"".join(encode_frame(request(i, "stats")) for i in range(12)))
        wait_for(lambda: len(server.held) == 8)
        server.release()
        reader = FrameReader()
        replies = [recv_message(sock, reader, timeout=5) for _ in range(12)]
    assert [r["id"] for r in replies] == list(range(12))
    assert [r["ok"] for r in replies] == [True] * 8 + [False] * 4
    assert "too many requests in flight" in replies[-1]["error"]


def test_client_gone_before_the_workers_answer(served_async) -> None:
    server, ctl = served_async
    with connect(ctl.path) as sock:
        sock.sendall(encode_frame(request(1, "status")))
        wait_for(lambda: len(server.held) == 1)
    wait_for(lambda: not ctl.connections)
    server.release()
    wait_for(lambda: not server.held)
    assert call(ctl.path, "help")  # the late answer went nowhere, and nothing broke


EXHAUSTED_MASTER = """
import resource
held = []

def exhaust(server):
    note("exhausted", "yes")  # (before: writing a file needs a descriptor)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
    while True:
        try:
            held.append(os.dup(0))
        except OSError:
            break

def release(*_):
    while held:
        os.close(held.pop())

signal.signal(signal.SIGUSR2, release)
Server(app, workers=1, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid"),
       when_ready=exhaust).start()
"""


def test_out_of_descriptors_does_not_spin_the_master(master, tmp_path: Path) -> None:
    running = master(EXHAUSTED_MASTER)
    running.wait_ready()
    running.wait_file("exhausted")
    path = socket_path(tmp_path / "app.pid")
    answer: dict = {}
    client = threading.Thread(target=lambda: answer.update(help=call(path, "help", timeout=20)))
    client.start()
    try:
        running.wait_log("control socket accept failed")
        time.sleep(1.0)  # a measuring window, not synchronisation: a spinning loop fails thousands of times here
        assert running.log().count("control socket accept failed") <= 5  # one try per pause
    finally:
        running.signal(signal.SIGUSR2)  # give the descriptors back
        client.join(25)
    assert "status" in answer["help"]  # the waiting client was accepted and answered once fds were free
    assert http_get(running.port)[0] == 200
