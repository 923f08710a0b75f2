"""One shared port: every worker accepts on one listening socket, and only while it can serve.

Real masters and sockets; every wait is a condition with a deadline.
"""

from __future__ import annotations

import collections
import errno
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.prefork.prefork_testutil import http_get, process_gone, try_pid, wait_until

SHARED = """
    Server(app, workers={workers}, host="127.0.0.1", port=PORT, shared_port=True, graceful_timeout=5).start()
"""

# /slow notes the worker's pid in "started", then blocks until the test opens the FIFO "release".
BUSY = """
def busy_app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        note("started", os.getpid())
        with open(os.path.join(HERE, "release")) as fifo:
            fifo.read()
    return app(environ, start_response)


Server(busy_app, workers={workers}, threads={threads}, host="127.0.0.1", port=PORT, shared_port=True,
       graceful_timeout=5).start()
"""


def queues(port: int) -> list[int]:
    """The accept queue length of every socket listening on 127.0.0.1:``port`` (the kernel's table:
    a listener's rx_queue is the number of connections waiting for accept())."""
    with open("/proc/net/tcp") as handle:
        rows = [row.split() for row in handle.read().splitlines()[1:]]
    return [int(row[4].split(":")[1], 16) for row in rows
            if int(row[1].split(":")[1], 16) == port and row[3] == "0A"]


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port``."""
    return len(queues(port))


def test_every_worker_accepts_on_one_listening_socket(master):
    server = master(SHARED.format(workers=3))
    server.wait_ready()
    assert listeners(server.port) == 1
    server.signal(signal.SIGTTIN)
    server.wait_log(r"worker 3 \(pid \d+, port %d\) ready" % server.port)
    server.signal(signal.SIGTTOU)
    server.wait_log(r"slot 3 \(port %d\) removed" % server.port)
    assert listeners(server.port) == 1


def slow_requests(port: int, count: int) -> list[threading.Thread]:
    """Start ``count`` GET /slow, one at a time, each once the one before has started in a worker."""
    threads = []
    for _ in range(count):
        threads.append(threading.Thread(target=http_get, args=(port, "/slow"), kwargs={"timeout": 30}, daemon=True))
        threads[-1].start()
    return threads


def release(fifo: Path, requests: list[threading.Thread]) -> None:
    """Unblock every /slow (each reads the FIFO to its end) and wait for their responses."""
    def done() -> bool:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # readers blocked in open() get EOF
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader right now
                raise
        return not any(thread.is_alive() for thread in requests)

    wait_until(done, timeout=30, what="the slow requests to finish")


def test_a_busy_worker_takes_no_connection_an_idle_one_could(master, tmp_path):
    # One worker serves a request that does not finish until the test says so (threads=1). Every
    # new connection meanwhile is the other worker's: a busy worker does not accept. (A listener
    # per worker, spread by a hash, queued about half of them behind the slow request.)
    os.mkfifo(tmp_path / "release")
    server = master(BUSY.format(workers=2, threads=1))
    server.wait_ready()
    slow = slow_requests(server.port, 1)
    busy = int(server.wait_file("started")[0])
    try:
        answered = [try_pid(server.port, timeout=5) for _ in range(12)]  # a fresh connection each
    finally:
        release(tmp_path / "release", slow)
    assert None not in answered, answered
    assert busy not in answered, answered


def test_a_worker_whose_threads_are_all_busy_leaves_new_connections_to_the_others(master, tmp_path):
    # 3 workers of 2 threads; 6 requests that block, sent one after another: a worker takes a
    # connection only while a thread of its own is free, so each ends with exactly 2. (Accepting
    # whenever the loop polls, the spread is a matter of chance: 2+2+2 one time in 8.)
    os.mkfifo(tmp_path / "release")
    server = master(BUSY.format(workers=3, threads=2))
    server.wait_ready()
    slow: list[threading.Thread] = []
    try:
        for count in range(1, 7):
            slow += slow_requests(server.port, 1)
            started = server.wait_file("started", lines=count)
    finally:
        release(tmp_path / "release", slow)
    assert sorted(collections.Counter(started).values()) == [2, 2, 2], started


def test_a_second_master_cannot_join_the_shared_port(master):
    first = master(SHARED.format(workers=2))
    first.wait_ready()
    second = master(SHARED.format(workers=2), port=first.port, name="second")
    assert second.wait_exit() == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.log()
    assert listeners(first.port) == 1


MIGRATE = "/proc/sys/net/ipv4/tcp_migrate_req"


@pytest.fixture
def no_handshake_migration():
    """``net.ipv4.tcp_migrate_req=0`` (the kernel's default) for the test, where it can be set (root).

    The listener is never closed while the server runs, so nothing queued on it can be reset
    whatever this setting; the test pins the default to show that. Restored afterwards.
    """
    try:
        with open(MIGRATE) as handle:
            before = handle.read().strip()
        with open(MIGRATE, "w") as handle:
            handle.write("0")
    except OSError:  # not Linux 5.14+, or not root: the setting is whatever it is
        yield
        return
    try:
        yield
    finally:
        with open(MIGRATE, "w") as handle:
            handle.write(before)


def test_resizes_and_reloads_on_a_shared_port_fail_no_request(master, no_handshake_migration):
    server = master(SHARED.format(workers=2))
    server.wait_ready()
    ok, failures, stop = [0], [], threading.Event()
    phase = ["load"]

    def client() -> None:
        while not stop.is_set():
            try:
                status, _, _ = http_get(server.port, timeout=10)
                if status == 200:
                    ok[0] += 1
                else:
                    failures.append(status)
            except OSError as exc:
                failures.append(f"{exc!r} during {phase[0]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: ok[0] > 20, what="load to start")
        for name, pattern in (("TTIN", r"workers: 2 -> 3"), ("TTIN", r"workers: 3 -> 4"),
                              ("TTOU", r"slot 3 \(port \d+\) removed"), ("HUP", r"generation 1 serving"),
                              ("TTOU", r"slot 2 \(port \d+\) removed"), ("TTOU", r"slot 1 \(port \d+\) removed")):
            served = ok[0]
            phase[0] = name
            server.signal(getattr(signal, f"SIG{name}"))
            server.wait_log(pattern)
            wait_until(lambda: ok[0] > served + 20, what=f"load after {name}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == []
    assert listeners(server.port) == 1
    last = try_pid(server.port)
    server.signal(signal.SIGQUIT)
    assert server.wait_exit() == 0
    assert process_gone(last) and listeners(server.port) == 0
    sock = socket.socket()
    try:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0  # refused: nothing listens
    finally:
        sock.close()


def test_a_worker_removed_before_the_master_saw_it_ready_still_finishes_what_it_accepted(master):
    # A new worker reports ready and accepts on the shared socket at once; the master handles the
    # report a moment later (a busy turn of its loop). A TTOU in that moment must stop it gracefully,
    # not with SIGTERM: it may hold accepted connections. Here the moment is made 2 s long.
    server = master("""
        class SlowToSee(Server):
            def handle_worker_ready(self, worker):
                if worker.index == 1 and not hasattr(self, "held"):
                    self.held = worker.pid
                    note("held", worker.pid)
                    self.call_later(2.0, lambda: Server.handle_worker_ready(self, worker))
                    return
                super().handle_worker_ready(worker)
        SlowToSee(app, workers=1, host="127.0.0.1", port=PORT, shared_port=True, graceful_timeout=5).start()
    """)
    server.wait_ready()
    answered, failures, stop = collections.Counter(), [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _, body = http_get(server.port, timeout=10)
                answered[int(body) if status == 200 else status] += 1
            except OSError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        server.signal(signal.SIGTTIN)
        held = int(server.wait_file("held")[0])
        wait_until(lambda: answered[held] >= 20, what="the new worker serving")
        server.signal(signal.SIGTTOU)
        server.wait_log(r"slot 1 \(port \d+\) removed")
        served = sum(answered.values())
        wait_until(lambda: sum(answered.values()) > served + 20, what="load after the TTOU")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == []
    assert f"worker 1 (pid {held}, port {server.port}) exited with status 0" in server.log()
