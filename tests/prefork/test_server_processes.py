"""Process management: stdio, replacement, backoff, orphans, pid file, hung workers, slow start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.prefork.prefork_testutil import http_get, process_gone, try_pid, wait_until


def test_children_output_reaches_the_stream_and_stdin_is_dev_null(master, tmp_path):
    server = master("""
        class Talk:
            def on_start(self):
                print(f"stdout of {os.getpid()}", flush=True)
                print(f"stderr of {os.getpid()}", file=sys.stderr, flush=True)
                print(f"stdin is {os.readlink('/proc/self/fd/0')}", flush=True)
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Talk],
               stderr=os.path.join(HERE, "children.log")).start()
    """)
    server.wait_ready()
    pid = try_pid(server.port)
    lines = server.wait_file("children.log", lines=3)
    assert f"stdout of {pid}" in lines and f"stderr of {pid}" in lines
    assert "stdin is /dev/null" in lines


def test_output_stream_may_be_an_object_with_fileno(master):
    server = master("""
        class Talk:
            def on_start(self):
                print(f"hello from {os.getpid()}", flush=True)
        stream = open(os.path.join(HERE, "stream.log"), "a")
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Talk], stderr=stream).start()
    """)
    server.wait_ready()
    assert server.wait_file("stream.log") == [f"hello from {try_pid(server.port)}"]


def test_a_killed_worker_is_replaced_on_the_same_port(master):
    server = master("""
        def exited(worker, status):
            note("exited", f"{worker.index} {worker.pid} {status}")
        Server(app, workers=2, host="127.0.0.1", port=PORT, worker_exited=exited).start()
    """, ports=2)
    server.wait_ready()
    victim = try_pid(server.port + 1)
    os.kill(victim, signal.SIGKILL)
    replacement = wait_until(lambda: (p := try_pid(server.port + 1)) != victim and p, what="a new worker on the port")
    assert replacement != victim
    assert server.wait_file("exited") == [f"1 {victim} -9"]
    assert "died with status -9; replacing it" in server.log()


def test_a_crash_loop_backs_off_exponentially(master):
    server = master("""
        class Crash:
            def on_start(self):
                note("boots", time.monotonic())
                os._exit(3)
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Crash]).start()
    """)
    delays = server.wait_log(r"before it was ready; retrying in ([\d.]+) s", count=5, timeout=15)
    assert [float(d) for d in delays[:5]] == [0.1, 0.2, 0.4, 0.8, 1.6]
    boots = [float(t) for t in server.read("boots")]
    gaps = [b - a for a, b in zip(boots, boots[1:])]
    for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.8]):
        assert gap >= delay * 0.9
    assert server.proc.poll() is None  # the master never gives up


def test_backoff_is_capped(master):
    from prefork.server.slots import BACKOFF_CAP, backoff_delay
    assert backoff_delay(30) == BACKOFF_CAP == 5.0


def test_sigkill_of_the_master_leaves_no_worker_alive(master):
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()
    workers = [try_pid(server.port), try_pid(server.port + 1)]
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    started = time.monotonic()
    wait_until(lambda: all(process_gone(pid) for pid in workers), timeout=5, what="orphaned workers to exit")
    assert time.monotonic() - started < 1.5


def test_hung_worker_is_killed_and_replaced(master):
    server = master("""
        class Hang:
            def child_hang(self):
                time.sleep(60)  # blocks the worker's loop thread: pings go unanswered
        hung = []
        def ready(worker):
            if not hung:
                hung.append(worker.pid)
                worker.send_control_message("hang")
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Hang], timeout=0.5,
               worker_ready=ready).start()
    """)
    server.wait_log(r"did not answer ping within 0.5 s; killing it")
    server.wait_log(r"ready \(generation 0", count=2)
    assert try_pid(server.port) is not None


def test_slow_start_spaces_the_first_spawns(master):
    server = master("""
        class Boot:
            def on_start(self):
                note("boots", time.monotonic())
        Server(app, workers=3, host="127.0.0.1", port=PORT, worker_mixins=[Boot], slow_start=0.3).start()
    """, ports=3)
    server.wait_ready()
    boots = sorted(float(t) for t in server.read("boots"))
    assert boots[1] - boots[0] >= 0.25 and boots[2] - boots[1] >= 0.25


def test_a_failing_hook_is_logged_with_its_name_and_changes_nothing(master):
    server = master("""
        class Bad:
            def on_register(self):
                raise RuntimeError("register boom")
        def ready(worker):
            raise ValueError("ready boom")
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Bad], worker_ready=ready).start()
    """)
    server.wait_ready()
    log = server.log()
    assert "hook on_register failed for worker 0" in log and "register boom" in log
    assert "hook worker_ready failed" in log and "ready boom" in log
    assert try_pid(server.port)


def test_pid_file_lifecycle_live_stale_removed(master, tmp_path):
    pid_file = tmp_path / "app.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")  # stale: names a process that is gone
    body = """
        Server(app, workers=1, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid")).start()
    """
    first = master(body)
    first.wait_ready()
    assert pid_file.read_text() == f"{first.pid}\n"
    assert "replacing stale pid file" in first.log()

    second = master(body, name="second")
    assert second.wait_exit() != 0
    assert f"names a live process {first.pid}" in second.log()
    assert pid_file.read_text() == f"{first.pid}\n"

    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert not pid_file.exists()


def test_no_pid_file_when_the_port_is_taken(master, tmp_path):
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    server = master("""
        Server(app, workers=1, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid")).start()
    """, port=blocker.getsockname()[1])
    assert server.wait_exit() != 0
    assert "Address already in use" in server.log()
    assert not (tmp_path / "app.pid").exists()
    blocker.close()


def test_process_titles_name_the_master_and_each_worker(master):
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()

    def title(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode().strip()

    assert title(server.pid) == "prefork master"
    assert title(try_pid(server.port + 1)) == f"prefork worker 1 :{server.port + 1}"


def test_systemd_is_told_ready_reloading_stopping(master, tmp_path, monkeypatch):
    import socket as socketmod
    address = str(tmp_path / "notify.sock")
    listener = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    try:
        server = master("""
            Server(app, workers=1, host="127.0.0.1", port=PORT).start()
        """)
        assert listener.recv(256) == b"READY=1"
        server.signal(signal.SIGHUP)
        assert listener.recv(256) == b"RELOADING=1"
        assert listener.recv(256) == b"READY=1"
        server.signal(signal.SIGTERM)
        assert listener.recv(256) == b"STOPPING=1"
        assert server.wait_exit() == 0
    finally:
        listener.close()


def test_a_large_response_to_a_slow_reader_is_delivered_whole(master):
    """threads=1 runs requests on the loop thread: past waitress's 16 MiB high watermark it must block
    on the socket itself instead of waiting for a loop that is busy running the request."""
    server = master("""
        def big(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (b"x" * (1 << 20) for _ in range(24))
        Server(big, workers=1, host="127.0.0.1", port=PORT).start()
    """)
    server.wait_ready()
    import socket as socketmod
    with socketmod.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)  # not a synchronisation: lets the worker run into a full socket (backpressure)
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    assert received > 24 * (1 << 20)
    # A client that leaves without reading must not wedge the worker either.
    for _ in range(2):
        with socketmod.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1)
    status, _, body = http_get(server.port, timeout=20)
    assert status == 200 and len(body) == 24 * (1 << 20)
