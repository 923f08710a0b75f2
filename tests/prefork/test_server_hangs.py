"""The hang and signal-ignoring paths: each ends in its documented state within its deadline.

docs/prefork.md, "When things hang": a worker whose on_stop hangs, QUIT twice, TERM during a roll
(with a successor that hangs in on_start, or that also ignores TERM), TTOU at one worker, HUP or
TERM during a graceful stop. Real masters, real signals; every wait is a condition with a deadline.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import textwrap
import threading
import time

import pytest

from tests.prefork.prefork_testutil import process_gone, try_pid, wait_until

GRACEFUL = 2.0  # graceful_timeout of these masters: every stop below must end within GRACEFUL + 1 s

# The served app notes the pid of the worker that runs a slow request, so the test knows it is in flight.
SLOW_APP = """
    def slow(environ, start_response):
        path = environ["PATH_INFO"]
        if path.startswith("/slow/"):
            note("in-flight", os.getpid())
            time.sleep(float(path.rsplit("/", 1)[1]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{os.getpid()}".encode()]
"""

# What the CLI does with Server.stopped_cleanly: exit 1 when a stop had to SIGKILL a worker.
RUN = """
    server.start()
    sys.exit(0 if server.stopped_cleanly else 1)
"""


def script(*parts: str) -> str:
    """Join body parts written at different indentations (the master fixture dedents the whole)."""
    return "".join(textwrap.dedent(part) for part in parts)


class Slow:
    """One request in flight on its own connection; ``result`` is (status, body) or the error."""

    def __init__(self, port: int, seconds: float) -> None:
        self.result: tuple[int, str] | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(port, seconds), daemon=True)
        self._thread.start()

    def _run(self, port: int, seconds: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", f"/slow/{seconds:g}")
            response = conn.getresponse()
            self.result = (response.status, response.read().decode())
        except (OSError, http.client.HTTPException) as exc:
            self.result = exc
        finally:
            conn.close()

    def wait(self, timeout: float = 15.0) -> tuple[int, str] | BaseException | None:
        self._thread.join(timeout)
        return self.result


def stop_within(server, seconds: float, since: float) -> int:
    """Wait for the master's exit; fail unless it exited within ``seconds`` of ``since``."""
    code = server.wait_exit(timeout=seconds + 10)
    elapsed = time.monotonic() - since
    assert elapsed <= seconds, f"the master took {elapsed:.2f} s to exit (bound {seconds:g} s):\n{server.log()}"
    return code


def killed(log: str) -> set[int]:
    """The slots of the workers the master had to SIGKILL (the CLI's script logs each line twice)."""
    return {int(n) for n in re.findall(r"worker (\d+) \(pid \d+, port \d+\) did not stop in time; killing it", log)}


def signal_taken(server, signum: int) -> None:
    """Send ``signum`` and wait until the master logged it (standard signals are not queued)."""
    name = signal.Signals(signum).name
    before = server.log().count(f"received {name}")
    server.signal(signum)
    server.wait_log(f"received {name}", count=before + 1)


def test_a_worker_whose_on_stop_hangs_is_killed_after_graceful_timeout_and_the_cli_exits_1(master, tmp_path):
    # The command line has no mixin option: the app module gives every Worker a hanging on_stop.
    (tmp_path / "hang_app.py").write_text(
        "import os, time\n"
        "from prefork import Worker\n\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n\n\n"
        "def hang(self):\n"
        "    with open('on_stop', 'a') as handle:\n"
        "        handle.write(f'{os.getpid()}\\n')\n"
        "    while True:\n"
        "        time.sleep(60)\n\n\n"
        "Worker.on_stop = hang\n")
    server = master(f"""
        from prefork.cli import main
        sys.exit(main(["hang_app:app", "-w", "2", "-p", str(PORT), "--graceful-timeout", "{GRACEFUL:g}",
                           "--port-per-worker"]))
    """, ports=2)
    server.wait_ready()
    workers = [try_pid(server.port), try_pid(server.port + 1)]
    quit_at = time.monotonic()
    server.signal(signal.SIGQUIT)
    assert stop_within(server, GRACEFUL + 1, quit_at) == 1
    assert sorted(server.read("on_stop")) == sorted(str(pid) for pid in workers)  # both reached on_stop
    log = server.log()
    assert killed(log) == {0, 1}
    assert "stopped, but some workers had to be killed (SIGKILL) after their deadline" in log
    assert all(process_gone(pid) for pid in workers)
    assert try_pid(server.port, timeout=0.5) is None


def test_on_stop_that_hangs_at_a_roll_costs_the_predecessors_only(master):
    server = master(script("""
        class Hang:
            def on_stop(self):
                note("on_stop", os.getpid())
                while self.generation == 0:
                    time.sleep(60)
        server = Server(app, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=%g, worker_mixins=[Hang])
    """ % GRACEFUL, RUN), ports=2)
    server.wait_ready()
    old = [try_pid(server.port), try_pid(server.port + 1)]
    hup_at = time.monotonic()
    signal_taken(server, signal.SIGHUP)
    server.wait_log(r"generation 1 serving: 2 workers replaced")
    server.wait_log(r"did not stop in time; killing it", count=2, timeout=GRACEFUL + 5)
    wait_until(lambda: all(process_gone(pid) for pid in old), timeout=5, what="the hung predecessors to die")
    assert time.monotonic() - hup_at <= GRACEFUL + 1 + 1  # the roll's own boot, then graceful_timeout
    new = [try_pid(server.port), try_pid(server.port + 1)]
    assert all(new) and not set(new) & set(old)
    quit_at = time.monotonic()
    server.signal(signal.SIGQUIT)  # generation 1's on_stop returns: a clean stop, whatever happened before
    assert stop_within(server, GRACEFUL + 1, quit_at) == 0


@pytest.mark.parametrize("second, logged", [
    (signal.SIGQUIT, r"graceful stop already in progress"),      # QUIT twice is one graceful stop
    (signal.SIGHUP, r"reload ignored: the server is stopping"),   # a reload asked for meanwhile is ignored
])
def test_a_second_quit_or_a_hup_during_a_graceful_stop_changes_nothing(master, second, logged):
    server = master(script(SLOW_APP, f"""
        server = Server(slow, workers=1, host="127.0.0.1", port=PORT, graceful_timeout={GRACEFUL:g})
    """, RUN))
    server.wait_ready()
    request = Slow(server.port, 1.0)
    server.wait_file("in-flight")
    quit_at = time.monotonic()
    signal_taken(server, signal.SIGQUIT)
    signal_taken(server, second)
    server.wait_log(logged)
    assert stop_within(server, GRACEFUL + 1, quit_at) == 0
    assert request.wait() == (200, server.read("in-flight")[0])
    assert server.log().count("stopping gracefully") == 1
    assert "rolling to generation" not in server.log()


def test_term_during_a_graceful_stop_stops_now(master):
    server = master(script(SLOW_APP, """
        server = Server(slow, workers=1, host="127.0.0.1", port=PORT, graceful_timeout=30)
    """, RUN))
    server.wait_ready()
    request = Slow(server.port, 20)
    server.wait_file("in-flight")
    signal_taken(server, signal.SIGQUIT)
    term_at = time.monotonic()
    server.signal(signal.SIGTERM)
    assert stop_within(server, 1, term_at) == 0  # the worker dies of the TERM at once
    assert "stop now requested during a graceful stop: terminating workers" in server.log()
    assert isinstance(request.wait(), (OSError, http.client.HTTPException))  # cut, as TERM promises


def test_term_during_a_graceful_stop_never_moves_the_deadline_later(master):
    # The worker's on_stop hangs and it ignores TERM: only SIGKILL ends it, at the graceful deadline
    # (QUIT + graceful_timeout), not term_timeout after the TERM (which would be later here).
    server = master(script("""
        class Stubborn:
            def on_start(self):
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            def on_stop(self):
                note("on_stop", os.getpid())
                while True:
                    time.sleep(60)
        server = Server(app, workers=1, host="127.0.0.1", port=PORT, graceful_timeout=%g,
                        worker_mixins=[Stubborn])
    """ % GRACEFUL, RUN))
    server.wait_ready()
    quit_at = time.monotonic()
    signal_taken(server, signal.SIGQUIT)
    server.wait_file("on_stop")
    signal_taken(server, signal.SIGTERM)
    assert stop_within(server, GRACEFUL + 1, quit_at) == 1
    assert killed(server.log()) == {0}


@pytest.mark.parametrize("successor", ["hangs in on_start", "ignores TERM"])
def test_term_during_a_roll_stops_everything(master, successor):
    server = master(script("""
        class Gate:
            def on_start(self):
                if self.generation == 1:
                    if IGNORE:
                        signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    note("successor", os.getpid())
                    while True:
                        time.sleep(60)
        IGNORE = %r
        Server.term_timeout = 1.0  # stop now: SIGKILL what is left after 1 s (default 5 s)
        server = Server(app, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=%g, worker_mixins=[Gate])
    """ % (successor == "ignores TERM", GRACEFUL), RUN), ports=2)
    server.wait_ready()
    old = [try_pid(server.port), try_pid(server.port + 1)]
    server.signal(signal.SIGHUP)
    successors = [int(pid) for pid in server.wait_file("successor", lines=2)]
    term_at = time.monotonic()
    server.signal(signal.SIGTERM)
    code = stop_within(server, 1.0 + 1, term_at)  # term_timeout + 1 s
    log = server.log()
    assert "roll to generation 1 abandoned: the server is stopping" in log
    assert all(process_gone(pid) for pid in old + successors)
    assert try_pid(server.port, timeout=0.5) is None and try_pid(server.port + 1, timeout=0.5) is None
    if successor == "ignores TERM":
        assert code == 1 and killed(log) == {0, 1}
    else:
        assert code == 0 and "did not stop in time" not in log


def test_ttou_never_goes_below_one_worker(master):
    server = master(script("""
        server = Server(app, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=%g)
    """ % GRACEFUL, RUN), ports=2)
    server.wait_ready()
    first = try_pid(server.port)
    signal_taken(server, signal.SIGTTOU)
    server.wait_log(r"workers: 2 -> 1")
    wait_until(lambda: try_pid(server.port + 1, timeout=0.5) is None, what="port + 1 to close")
    for count in (1, 2):
        signal_taken(server, signal.SIGTTOU)
        server.wait_log(r"TTOU: already at one worker \(never fewer\); nothing changes", count=count)
    assert "workers: 1 -> 0" not in server.log()
    assert try_pid(server.port) == first  # the last worker was never touched
    signal_taken(server, signal.SIGTTIN)  # one TTIN is enough for two again: the target stayed at 1
    server.wait_log(r"workers: 1 -> 2")
    assert wait_until(lambda: try_pid(server.port + 1, timeout=0.5), what="a worker on port + 1 again")


def test_quit_to_the_whole_process_group_is_one_graceful_stop(master):
    # Ctrl-\ in a terminal, or systemd's default KillMode=control-group with KillSignal=SIGQUIT,
    # signals every process of the group: the workers leave QUIT to the master, which drains them.
    server = master(script(SLOW_APP, f"""
        server = Server(slow, workers=2, host="127.0.0.1", port=PORT, graceful_timeout={GRACEFUL:g})
    """, RUN), ports=2)
    server.wait_ready()
    request = Slow(server.port, 1.0)
    worker = int(server.wait_file("in-flight")[0])
    quit_at = time.monotonic()
    os.killpg(server.pid, signal.SIGQUIT)
    assert stop_within(server, GRACEFUL + 1, quit_at) == 0
    assert request.wait() == (200, str(worker))
    assert f"worker 0 (pid {worker}, port {server.port}) exited with status 0" in server.log()


@pytest.mark.parametrize("name", ["TTIN", "TTOU", "USR1", "USR2", "HUP"])
def test_the_master_s_signals_sent_to_the_whole_group_reach_only_the_master(master, name):
    # USR1, USR2 and HUP would kill workers that kept the default action, TTIN/TTOU would stop them
    # (in a terminal's process group; in an orphaned one like this test's the kernel drops those).
    # Workers ignore them all: only the master acts, once.
    server = master(script("""
        server = Server(app, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=%g)
    """ % GRACEFUL, RUN), ports=3)
    server.wait_ready()
    before = [try_pid(server.port), try_pid(server.port + 1)]
    os.killpg(server.pid, getattr(signal, f"SIG{name}"))
    server.wait_log(f"received SIG{name}")
    expected = {"TTIN": r"workers: 2 -> 3", "TTOU": r"workers: 2 -> 1", "USR1": r"reopened log files",
                "USR2": r"generation 1 serving", "HUP": r"generation 1 serving"}[name]
    server.wait_log(expected)
    if name in ("TTIN", "USR1"):  # the workers were not touched, and answer at once
        assert [try_pid(server.port, timeout=2), try_pid(server.port + 1, timeout=2)] == before
    elif name == "TTOU":
        assert try_pid(server.port, timeout=2) == before[0]
    assert "died with status" not in server.log()


def test_int_to_the_whole_process_group_stops_now(master):
    # Ctrl-C in a terminal: the master stops now (TERM to every worker); the workers leave INT to it.
    server = master(script(SLOW_APP, """
        server = Server(slow, workers=2, host="127.0.0.1", port=PORT, graceful_timeout=30)
    """, RUN), ports=2)
    server.wait_ready()
    workers = [try_pid(server.port), try_pid(server.port + 1)]
    int_at = time.monotonic()
    os.killpg(server.pid, signal.SIGINT)
    assert stop_within(server, 1, int_at) == 0
    assert "stopping now" in server.log()
    assert all(process_gone(pid) for pid in workers)
