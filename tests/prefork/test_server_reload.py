"""Rolling reloads: zero failed requests under load, failed successors, coalescing, shared port."""

from __future__ import annotations

import http.client
import json
import select
import signal
import threading

from tests.prefork.prefork_testutil import http_get, try_pid, wait_until


class Load:
    """Client threads sending GETs until stopped; every failure is recorded."""

    def __init__(self, ports: list[int], clients: int = 4, keep_alive: bool = False) -> None:
        self.ports = ports
        self.keep_alive = keep_alive
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _record(self, body: str | None, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.ok += 1
                self.pids.add(int(body))
            else:
                self.failures.append(error)

    def _run(self, number: int) -> None:
        port = self.ports[number % len(self.ports)]
        conn = None
        while not self._stop.is_set():
            if not self.keep_alive:
                try:
                    status, _, body = http_get(port, timeout=10)
                    self._record(body, None if status == 200 else f"status {status}")
                except OSError as exc:
                    self._record(None, repr(exc))
                continue
            for attempt in (1, 2):  # a browser/nginx retries an idempotent request once on a dropped idle connection
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read().decode()
                    if response.getheader("Connection") == "close":
                        conn.close()
                        conn = None
                    self._record(body, None if response.status == 200 else f"status {response.status}")
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn.close()
                    conn = None
                    if attempt == 2:
                        self._record(None, repr(exc))
                except OSError as exc:
                    self._record(None, repr(exc))
                    conn = None
                    break


def reload_times(server, times: int) -> None:
    for generation in range(1, times + 1):
        server.signal(signal.SIGHUP)
        server.wait_log(rf"generation {generation} serving", timeout=15)


def test_rolling_reload_under_concurrent_load_fails_no_request(master):
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()
    with Load([server.port, server.port + 1], clients=4) as load:
        wait_until(lambda: load.ok > 20, what="load to start")
        reload_times(server, 3)
        served = load.ok
        wait_until(lambda: load.ok > served + 20, what="load after the last reload")
    assert load.failures == []
    assert len(load.pids) >= 6  # three generations of two workers answered


def test_rolling_reload_with_keep_alive_clients_that_retry_once(master):
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT, threads=2).start()
    """, ports=2)
    server.wait_ready()
    with Load([server.port, server.port + 1], clients=4, keep_alive=True) as load:
        wait_until(lambda: load.ok > 20, what="load to start")
        reload_times(server, 3)
        served = load.ok
        wait_until(lambda: load.ok > served + 20, what="load after the last reload")
    assert load.failures == []


def test_old_workers_close_idle_keep_alive_connections_one_slot_after_the_other(master):
    """A proxy whose request met a keep-alive connection closed by a retiring worker retries it on
    another port at once (nginx: proxy_next_upstream error); if every old worker closed its idle
    connections in the same instant, the retry met a closed one too ("502 no live upstreams").
    So once slot 0's old worker has closed its idle connection, slot 1's still answers on its own."""
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()
    conns = [http.client.HTTPConnection("127.0.0.1", server.port + i, timeout=10) for i in (0, 1)]
    old = []
    for conn in conns:  # HTTP/1.1: each stays open, idle, after its answer
        conn.request("GET", "/")
        response = conn.getresponse()
        old.append(int(response.read()))
        assert response.getheader("Connection") != "close"
    server.signal(signal.SIGHUP)
    assert select.select([conns[0].sock], [], [], 10)[0], "slot 0's old worker never closed its idle connection"
    assert conns[0].sock.recv(1) == b""
    conns[1].request("GET", "/")
    response = conns[1].getresponse()
    # Answered by the old worker: with Connection: close, or without if its stop is still on its way.
    assert (response.status, int(response.read())) == (200, old[1])
    for conn in conns:
        conn.close()


def test_old_workers_close_idle_keep_alive_connections_within_moments_of_each_roll(master):
    """Slot 1's later close is not a wait for the loop's next housekeeping round (1 s): over 20 rolls,
    every idle keep-alive connection of an old worker sees its end well within that."""
    server = master("""
        Server(app, workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()
    for roll in range(1, 21):
        conns = [http.client.HTTPConnection("127.0.0.1", server.port + i, timeout=10) for i in (0, 1)]
        for conn in conns:
            conn.request("GET", "/")
            conn.getresponse().read()
        server.signal(signal.SIGHUP)
        for index, conn in enumerate(conns):
            assert select.select([conn.sock], [], [], 0.7)[0], f"roll {roll}: slot {index}'s idle connection still open"
            assert conn.sock.recv(1) == b""
            conn.close()
        server.wait_log(rf"generation {roll} serving")


def test_shared_port_serves_from_every_worker_and_survives_reloads(master):
    server = master("""
        def ready(server):
            note("ports", json.dumps(sorted({w.port for w in server.workers})))
        Server(app, workers=2, host="127.0.0.1", port=PORT, shared_port=True, when_ready=ready).start()
    """, ports=2)
    server.wait_ready()
    assert server.wait_file("ports") == [f"[{server.port}]"]
    assert try_pid(server.port + 1, timeout=0.5) is None
    with Load([server.port], clients=4) as load:
        wait_until(lambda: load.ok > 20, what="load to start")
        reload_times(server, 2)
        served = load.ok
        wait_until(lambda: load.ok > served + 20, what="load after the reloads")
    assert load.failures == []
    assert len(load.pids) >= 4
    victim = try_pid(server.port)
    __import__("os").kill(victim, signal.SIGKILL)
    server.wait_log(rf"pid {victim}, port {server.port}\) died with status -9; replacing it")
    server.wait_log(r"ready \(generation 2", count=3)  # two successors, then the replacement
    assert try_pid(server.port)


def test_failed_successors_leave_the_old_workers_serving(master, tmp_path):
    server = master("""
        class Fragile:
            def on_start(self):
                if os.path.exists(os.path.join(HERE, "break")) and self.generation > 0:
                    raise RuntimeError("successor cannot start")
        class Reporting(Server):
            def roll_finished(self, ok, info):
                super().roll_finished(ok, info)
                note("rolls", json.dumps([ok, info["generation"], info["reason"]]))
        Reporting(app, workers=2, host="127.0.0.1", port=PORT, worker_mixins=[Fragile]).start()
    """, ports=2)
    server.wait_ready()
    before = [try_pid(server.port), try_pid(server.port + 1)]
    (tmp_path / "break").write_text("")
    server.signal(signal.SIGHUP)
    rolls = server.wait_file("rolls")
    ok, generation, reason = __import__("json").loads(rolls[0])
    assert not ok and generation == 1 and "before it was ready" in reason
    assert "roll to generation 1 abandoned" in server.log()
    assert [try_pid(server.port), try_pid(server.port + 1)] == before
    (tmp_path / "break").unlink()
    server.signal(signal.SIGHUP)
    server.wait_file("rolls", lines=2)
    assert __import__("json").loads(server.read("rolls")[1])[:2] == [True, 1]
    after = [try_pid(server.port), try_pid(server.port + 1)]
    assert not set(after) & set(before)


def test_reloads_during_a_roll_are_coalesced_into_one(master, tmp_path):
    # Generation 1's worker holds its roll open in on_start until the test lets it go (a gate file,
    # polled with a deadline), so the HUPs below certainly arrive during that roll.
    server = master("""
        class GatedBoot:
            def on_start(self):
                if self.generation == 1:
                    note("gen1-booting", os.getpid())
                    deadline = time.monotonic() + 30
                    while not os.path.exists(os.path.join(HERE, "release")) and time.monotonic() < deadline:
                        time.sleep(0.01)
        class Counting(Server):
            def roll_finished(self, ok, info):
                super().roll_finished(ok, info)
                note("rolls", json.dumps([ok, info["generation"]]))
        Counting(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[GatedBoot]).start()
    """)
    server.wait_ready()
    server.signal(signal.SIGHUP)
    server.wait_file("gen1-booting")  # roll 1 is in progress and cannot finish before the release
    for sent in range(1, 4):
        # Standard signals are not queued: send each HUP once the master has taken the previous in.
        server.signal(signal.SIGHUP)
        server.wait_log(r"reload requested during a roll: one more reload will follow it", count=sent)
    (tmp_path / "release").write_text("")
    server.wait_log(r"generation 2 serving")
    # The coalesced reload is posted when roll 2 ends; anything posted after that (USR1) is handled
    # after it, so once the master answered USR1 a third roll would have started and been logged.
    server.signal(signal.SIGUSR1)
    server.wait_log(r"reopened log files")
    assert "rolling to generation 3" not in server.log()
    assert [json.loads(line) for line in server.read("rolls")] == [[True, 1], [True, 2]]
    # And nothing was left queued: the next HUP is the third roll, and the last.
    server.signal(signal.SIGHUP)
    server.wait_log(r"generation 3 serving")
    server.signal(signal.SIGUSR1)
    server.wait_log(r"reopened log files", count=2)
    assert [json.loads(line) for line in server.read("rolls")] == [[True, 1], [True, 2], [True, 3]]
    assert "rolling to generation 4" not in server.log()
