"""Signals (TERM, INT, QUIT, HUP, TTIN, TTOU, USR1), graceful stop, a user's own handler."""

from __future__ import annotations

import http.client
import os
import signal
import threading

import pytest

from tests.prefork.prefork_testutil import http_get, process_gone, try_pid, wait_until

BODY = """
    Server(app, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=10).start()
"""


def test_term_stops_now_and_exits_zero(master):
    server = master(BODY, ports=2)
    server.wait_ready()
    workers = [try_pid(server.port), try_pid(server.port + 1)]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert all(process_gone(pid) for pid in workers)
    assert "stopping now" in server.log()


def test_int_stops_now(master):
    server = master(BODY, ports=2)
    server.wait_ready()
    server.signal(signal.SIGINT)
    assert server.wait_exit() == 0


def test_inherited_ignore_does_not_disable_quit(master):
    # A shell starts a background job (`prefork app &`) with INT and QUIT ignored; the operator's
    # `kill -QUIT` must still drain the master.
    server = master("""
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        Server(app, workers=1, host="127.0.0.1", port=PORT, graceful_timeout=10).start()
    """)
    server.wait_ready()
    server.signal(signal.SIGQUIT)
    assert server.wait_exit() == 0
    assert "stopping gracefully" in server.log()


@pytest.mark.parametrize("threads", [1, 2])
def test_quit_stops_gracefully_finishing_a_slow_request(master, threads):
    server = master(f"""
        def slow(environ, start_response):
            note("in-flight", os.getpid())
            time.sleep(1.0)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"finished"]
        class Bye:
            def on_stop(self):
                note("stopped", os.getpid())
        Server(slow, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Bye], graceful_timeout=10,
               threads={threads}).start()
    """)
    server.wait_ready()
    result = {}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def request():
        conn.request("GET", "/")
        response = conn.getresponse()
        result["response"] = (response.status, response.getheader("Connection"), response.read().decode())

    client = threading.Thread(target=request)
    client.start()
    worker = int(server.wait_file("in-flight")[0])
    server.signal(signal.SIGQUIT)
    client.join(10)
    status, connection, body = result["response"]
    assert (status, body) == (200, "finished")
    if threads > 1:
        assert connection == "close"  # answered while draining
    # threads=1 runs the request on the loop thread: it finished before the stop was read, and the
    # then idle keep-alive connection is closed. Either way the client sees the connection end.
    if threads == 1:
        conn.sock.settimeout(10)
        assert conn.sock.recv(1) == b""
    else:
        assert conn.sock is None  # http.client closed it as the response asked
    conn.close()
    assert server.wait_exit() == 0
    assert server.read("stopped") == [str(worker)]
    assert f"worker 0 (pid {worker}, port {server.port}) exited with status 0" in server.log()


def test_graceful_stop_closes_idle_keep_alive_connections(master):
    server = master(BODY, ports=2)
    server.wait_ready()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    response.read()
    assert response.getheader("Connection") is None  # kept alive
    server.signal(signal.SIGQUIT)
    assert server.wait_exit() == 0  # the idle connection did not hold the worker up
    conn.close()


def test_graceful_stop_kills_what_outlives_graceful_timeout(master):
    server = master("""
        Server(app, workers=1, host="127.0.0.1", port=PORT, graceful_timeout=0.5).start()
    """)
    server.wait_ready()
    threading.Thread(target=lambda: _swallow(lambda: http_get(server.port, "/sleep/30", timeout=10)),
                     daemon=True).start()
    wait_until(lambda: _in_flight(server), what="the request to be in flight")
    server.signal(signal.SIGQUIT)
    assert server.wait_exit() == 0
    assert "did not stop in time; killing it" in server.log()


def _swallow(function):
    try:
        function()
    except OSError:
        pass


def _in_flight(server):
    """True once a TCP connection to the server's port is established (the kernel's own table)."""
    with open("/proc/net/tcp") as handle:
        rows = handle.read().splitlines()[1:]
    return any(int(row.split()[1].split(":")[1], 16) == server.port and row.split()[3] == "01" for row in rows)


def test_hup_replaces_every_worker_on_the_same_ports(master):
    server = master(BODY, ports=2)
    server.wait_ready()
    before = [try_pid(server.port), try_pid(server.port + 1)]
    server.signal(signal.SIGHUP)
    server.wait_log(r"generation 1 serving: 2 workers replaced")
    # The predecessors get their stop now; until each has read it, it may still accept one more
    # connection on the shared socket, so look at who answers once they are gone.
    wait_until(lambda: all(process_gone(pid) for pid in before), what="the old workers to exit")
    after = [try_pid(server.port), try_pid(server.port + 1)]
    assert all(after) and not set(before) & set(after)


def test_ttin_adds_and_ttou_removes_a_worker(master):
    server = master(BODY, ports=3)
    server.wait_ready()
    assert try_pid(server.port + 2, timeout=0.5) is None
    server.signal(signal.SIGTTIN)
    added = wait_until(lambda: try_pid(server.port + 2), what="worker 2 on port + 2")
    server.signal(signal.SIGTTOU)
    wait_until(lambda: process_gone(added), what="worker 2 to stop")
    wait_until(lambda: try_pid(server.port + 2, timeout=0.5) is None, what="port + 2 to close")
    assert try_pid(server.port) and try_pid(server.port + 1)
    for _ in range(3):
        server.signal(signal.SIGTTOU)
    server.wait_log(r"workers: 2 -> 1")
    assert "workers: 1 -> 0" not in server.log()  # TTOU never goes below one worker


def test_usr1_reopens_the_log_file_in_master_and_workers(master, tmp_path):
    server = master("""
        def talk(environ, start_response):
            print(f"request {environ['PATH_INFO']}", flush=True)
            return app(environ, start_response)
        Server(talk, workers=1, host="127.0.0.1", port=PORT, stderr=os.path.join(HERE, "out.log")).start()
    """)
    server.wait_ready()
    http_get(server.port, "/before")
    os.rename(tmp_path / "out.log", tmp_path / "out.log.1")  # what logrotate does
    server.signal(signal.SIGUSR1)
    server.wait_log(r"reopened log files")
    wait_until(lambda: (tmp_path / "out.log").exists(), what="the master to reopen out.log")
    # The reopen_logs command reaches the worker after the master reopened: retry the request until
    # the worker's output lands in the new file.
    wait_until(lambda: http_get(server.port, "/after") and "request /after" in (tmp_path / "out.log").read_text(),
               what="worker output in the new file")
    assert "request /before" in (tmp_path / "out.log.1").read_text()


def test_a_handler_installed_before_start_wins(master):
    server = master("""
        server = Server(app, workers=1, host="127.0.0.1", port=PORT)
        def mine(signum, frame):
            note("hup", "user handler")
            server.stop()
        signal.signal(signal.SIGHUP, mine)
        server.start()
    """)
    server.wait_ready()
    server.signal(signal.SIGHUP)
    assert server.wait_exit() == 0
    assert server.read("hup") == ["user handler"]
    assert "reload requested" not in server.log()


def test_start_without_signals_installs_none(master):
    server = master("""
        server = Server(app, workers=1, host="127.0.0.1", port=PORT)
        def ready(s):
            note("handler", repr(signal.getsignal(signal.SIGTERM)))
        server.when_ready = lambda: ready(server)
        server.start(install_signals=False)
    """)
    server.wait_ready()
    assert server.wait_file("handler") == ["<Handlers.SIG_DFL: 0>"]


def _ignore_sigchld() -> None:
    """preexec_fn: what a careless parent hands down; SIG_IGN survives exec."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def test_an_inherited_ignored_sigchld_still_replaces_dead_workers(master):
    # With SIGCHLD ignored the kernel reaps children itself and waitpid() fails with ECHILD: the
    # master must take SIGCHLD over, whatever it inherited, or a dead worker is never replaced.
    server = master("""
        note("inherited", repr(signal.getsignal(signal.SIGCHLD)))
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2, preexec_fn=_ignore_sigchld)
    server.wait_ready()
    assert server.read("inherited") == ["<Handlers.SIG_IGN: 1>"]  # the test really inherited it
    victim = try_pid(server.port)
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"worker 0 \(pid {victim}, port {server.port}\) died with status -9; replacing it")
    replacement = wait_until(lambda: try_pid(server.port, timeout=1.0), timeout=5, what="a replacement on port 0")
    assert replacement != victim and process_gone(victim)
    assert try_pid(server.port + 1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
