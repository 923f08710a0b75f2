"""The reliability scenarios, parameterised by size: pytest runs them small, bench/soak.py long.

Each scenario function starts real processes through a ``Launcher`` (own session, killed by
process group at close), drives them with real signals, sockets and file edits, counts what the
clients saw, and returns a ``Result`` whose ``problems`` list says what went wrong (empty: pass).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from prefork.control import FrameReader, encode_frame, recv_message, request
from tests.integration.integration_util import http_get as integration_get
from tests.prefork.prefork_testutil import Master, http_get, try_pid
from tests.reliability.harness import (
    EXAMPLES, PYTHON, Launcher, Load, Result, Running, children_of, cpu_seconds, ctl, free_ports,
    monotonic_per_port, port_free, process_alive, rss_kib, timed_ctl, wait_for)

HERE = Path(__file__).resolve().parent
SERVE = HERE / "serve_project.py"
APP_PATH = "/rel.json"

# app.py of the copied example gains a leaf constant and a route that reports it with the rest.
APP_EXTRA = '''
import json as _json

LEAF = {leaf}


def reliability(environ):
    """status.json plus LEAF: which leaf edit this worker runs (added by the reliability suite)."""
    info = _json.loads(api.status(environ).body)
    info["leaf"] = LEAF
    return Response(_json.dumps(info))


ROUTES["/rel.json"] = reliability
'''


# -- the project under test ----------------------------------------------------------------------


class Site:
    """A private copy of examples/myproject with numbered edits to a root and a leaf module.

    ``myproject/version.py`` is the root of the import graph (settings, services, views and app
    all depend on it); ``myproject/app.py`` is the leaf (nothing imports it). Edit ``n`` writes
    ``n`` into one of them, so a response's level ``max(version, leaf)`` says which edit it runs.
    """

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "myproject"
        shutil.copytree(EXAMPLES / "myproject", self.root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.version = self.root / "myproject" / "version.py"
        self.app = self.root / "myproject" / "app.py"
        self.settings = self.root / "myproject" / "settings.py"
        self._app_base = self.app.read_text()
        self._settings_base = self.settings.read_text()
        self.level = 0
        self.write_root(0)
        self.write_leaf(0)

    @property
    def project_file(self) -> Path:
        return self.root / "project.py"

    def write_root(self, n: int) -> None:
        self.version.write_text(f'"""The code version (edited by the reliability suite)."""\nVERSION = "{n}"\n')

    def write_leaf(self, n: int) -> None:
        self.app.write_text(self._app_base + APP_EXTRA.format(leaf=n))

    def edit(self, n: int) -> str:
        """Good edit number ``n``: odd ones edit the root, even ones the leaf. Returns which."""
        if n % 2:
            self.write_root(n)
            kind = "root"
        else:
            self.write_leaf(n)
            kind = "leaf"
        self.level = n
        return kind

    def restore_settings(self) -> None:
        self.settings.write_text(self._settings_base)

    @staticmethod
    def level_of(body: dict[str, Any]) -> int:
        return max(int(body["version"]), int(body["leaf"]))

    def start(self, launcher: Launcher, workers: int = 4, extra: list[str] = (), block: int | None = None) -> Running:
        """Serve the site with ``workers`` workers (on a block of ``block`` free ports, if given)."""
        pid_file = launcher.tmp_path / "server.pid"

        def command(port: int) -> list[str]:
            return [PYTHON, str(SERVE), str(self.project_file), "--port", str(port), "--workers", str(workers),
                    "--pid", str(pid_file), *extra]

        if block is None:
            return launcher.start_http(command, workers, cwd=self.root, pid_file=pid_file, path=APP_PATH)
        port = free_ports(block)
        proc, log_path = launcher.spawn(command(port), cwd=self.root, log_name=f"server-block-{len(launcher.procs)}.log")
        running = Running(proc, log_path, port, workers, pid_file)
        running.wait_ready(lambda p: status_of(p))
        return running


def status_of(port: int) -> dict[str, Any] | None:
    """The /rel.json of the worker on ``port``, or None when it does not answer."""
    try:
        code, body = integration_get(port, APP_PATH, timeout=5)
    except (OSError, ValueError):
        return None
    return json.loads(body) if code == 200 else None


def wait_level(load: Load, ports: list[int], level: int, since: float, timeout: float = 15.0) -> float:
    """Wait until every port served ``level`` in a request sent after ``since``; return when."""
    def served() -> float | None:
        latest = 0.0
        for port in ports:
            hits = [r.done for r in load.ok_after(since, port) if Site.level_of(r.body) >= level]
            if not hits:
                return None
            latest = max(latest, min(hits))
        return latest
    return wait_for(served, timeout, f"every port serving edit {level}")


# -- reloads under load --------------------------------------------------------------------------


def reloads_under_load(launcher: Launcher, reloads: int = 20, workers: int = 4, clients: int = 8) -> Result:
    """N edits alternating root and leaf, each served by every worker, under keep-alive load."""
    result = Result("reloads under load", f"{workers} workers, {clients} keep-alive clients, {reloads} reloads")
    site = Site(launcher.tmp_path)
    server = site.start(launcher, workers)
    started = time.monotonic()
    with Load(server.ports, clients=clients, path=APP_PATH) as load:
        load.wait_requests(clients)
        for n in range(1, reloads + 1):
            edited = time.monotonic()
            site.edit(n)
            served_at = wait_level(load, server.ports, n, edited)
            result.recovered(served_at - edited)
        load.wait_requests(clients)
    result.duration = time.monotonic() - started
    result.count_load(load)
    generations = {r.body["generation"] for r in load.requests if r.ok}
    result.extra["generations seen"] = len(generations)
    result.check(result.failures == 0, f"{result.failures} failed requests: {[r.error for r in load.failures[:5]]}")
    result.check(len(generations) >= reloads + 1, f"only {len(generations)} generations served")
    for key, name in ((Site.level_of, "code level"), (lambda b: int(b["generation"]), "generation")):
        backwards = monotonic_per_port(load.requests, key)
        result.check(not backwards, f"{name} went back: {backwards[:3]}")
    reload_lines = server.wait_log(r"reload #\d+: ", count=reloads)
    result.extra["reload log lines"] = len(reload_lines)
    return result


# -- bad edits under load ------------------------------------------------------------------------

BAD_EDITS: dict[str, tuple[str, str]] = {
    # name: (file attribute of Site, text written there)
    "SyntaxError": ("version", 'VERSION = "broken\n'),
    "NameError at import": ("version", "VERSION = UNDEFINED_NAME\n"),
    "ImportError": ("version", "from myproject.no_such_module import VERSION\n"),
    "exception building the app": ("app", None),  # filled in by bad_text()
    "exception in on_start": ("settings", None),
    "endless loop at import": ("version", 'while True:\n    pass\nVERSION = "never"\n'),
}


def bad_text(site: Site, name: str) -> tuple[Path, str]:
    """The file and the broken content of bad edit ``name``."""
    attribute, text = BAD_EDITS[name]
    path: Path = getattr(site, attribute)
    if name == "exception building the app":
        text = site.app.read_text() + '\nraise RuntimeError("cannot build the app")\n'
    elif name == "exception in on_start":
        text = site.settings.read_text() + ('\n\ndef on_worker_start():\n'
                                            '    raise RuntimeError("on_start refuses to start")\n')
    return path, text


class MasterProbe:
    """Checks that the master answers ``prefork ctl status`` and a signal (USR1) within a second."""

    def __init__(self, server: Running, pid_file: Path) -> None:
        self.server = server
        self.pid_file = pid_file
        self.ctl_times: list[float] = []
        self.signal_times: list[float] = []

    def probe(self) -> None:
        seconds, status = timed_ctl(self.pid_file, "status", timeout=5.0)
        assert status["master_pid"] == self.server.proc.pid
        self.ctl_times.append(seconds)
        before = len(re.findall(r"reopened log files", self.server.log()))
        sent = time.monotonic()
        self.server.signal(signal.SIGUSR1)
        self.server.wait_log(r"reopened log files", timeout=5.0, count=before + 1)
        self.signal_times.append(time.monotonic() - sent)

    @property
    def worst(self) -> float:
        return max(self.ctl_times + self.signal_times, default=0.0)


def bad_edits_under_load(launcher: Launcher, rounds: int = 1, workers: int = 4, clients: int = 8,
                         reload_timeout: float = 2.0) -> Result:
    """Each bad edit under load: old code serves, the master answers, the fix is served."""
    result = Result("bad edits under load", f"{workers} workers, {clients} keep-alive clients, "
                    f"{len(BAD_EDITS)} kinds x {rounds}")
    site = Site(launcher.tmp_path)
    server = site.start(launcher, workers, ["--reload-timeout", str(reload_timeout)])
    probe = MasterProbe(server, launcher.tmp_path / "server.pid")
    started = time.monotonic()
    failures_logged = 0
    wrong_code = 0
    n = 0
    with Load(server.ports, clients=clients, path=APP_PATH) as load:
        load.wait_requests(clients)
        for _ in range(rounds):
            for name in BAD_EDITS:
                good_level = site.level
                path, text = bad_text(site, name)
                original = path.read_text()
                broken_at = time.monotonic()
                path.write_text(text)
                # Until the master has given up on the edit, probe it repeatedly.
                deadline = time.monotonic() + reload_timeout + 10
                while True:
                    probe.probe()
                    if len(re.findall(r"reload #\d+ failed", server.log())) > failures_logged:
                        break
                    assert time.monotonic() < deadline, f"{name}: no failed reload logged\n{server.log()}"
                failures_logged += 1
                probe.probe()
                load.wait_requests(clients)
                wrong = [r for r in load.ok_after(broken_at) if Site.level_of(r.body) != good_level]
                wrong_code += len(wrong)
                result.check(not wrong, f"{name}: {len(wrong)} responses not from the old code")
                # The fix: the original content plus a new good edit, served everywhere.
                path.write_text(original)
                n = site.level + 1
                fixed = time.monotonic()
                site.edit(n)
                recovery = wait_level(load, server.ports, n, fixed) - fixed
                result.recovered(recovery)
                result.extra[f"fix of {name}"] = f"{recovery * 1000:.0f} ms"
        load.wait_requests(clients)
    result.duration = time.monotonic() - started
    result.count_load(load)
    result.extra["failed reloads logged"] = failures_logged
    result.extra["responses from the bad code"] = wrong_code
    result.extra["worst ctl/signal answer"] = f"{probe.worst * 1000:.0f} ms"
    result.check(result.failures == 0, f"{result.failures} failed requests: {[r.error for r in load.failures[:5]]}")
    result.check(probe.worst < 1.0, f"the master took {probe.worst:.2f} s to answer")
    result.check(server.proc.poll() is None, "the master exited")
    return result


# -- plain Server scenarios (the prefork test app: answers its pid, /sleep/S sleeps S seconds) -------


def start_master(launcher: Launcher, body: str, workers: int, name: str = "server",
                 where: Path | None = None) -> Master:
    """A prefork master running ``body`` on ``workers`` free ports; killed with the launcher."""
    server = Master(where or launcher.tmp_path, body, free_ports(workers), name)
    launcher.procs.append(server.proc)  # the launcher kills its process group at close
    return server


def master_ports(server: Master, workers: int) -> list[int]:
    return [server.port + i for i in range(workers)]


def attributable(failure: Any, kills: list[tuple[float, int, int]]) -> bool:
    """A failed request is explained by a kill when its connection was open to the killed slot."""
    return any(port == failure.port and failure.conn_opened <= when <= failure.done for when, port, _ in kills)


def chaos(launcher: Launcher, seconds: float = 5.0, interval: float = 0.1, workers: int = 4,
          clients: int = 8, seed: int | None = None) -> Result:
    """SIGKILL a random serving worker every ``interval`` s under load; count forks and failures."""
    result = Result("chaos: SIGKILL a worker every 100 ms", f"{workers} workers, {clients} keep-alive clients")
    rng = random.Random(seed)
    server = start_master(launcher, f"""
        Server(app, workers={workers}, host="127.0.0.1", port=PORT,
               pid_file=os.path.join(HERE, "server.pid")).start()
    """, workers)
    server.wait_ready()
    ports = master_ports(server, workers)
    kills: list[tuple[float, int, int]] = []  # (when, port, pid)
    killed: set[int] = set()
    skipped = 0
    started = time.monotonic()
    with Load(ports, clients=clients, path="/", parse=int) as load:
        load.wait_requests(clients)
        next_kill = time.monotonic()
        while time.monotonic() - started < seconds:
            latest: dict[int, int] = {}
            for request in list(load.requests)[-200:]:
                if request.ok:
                    latest[request.port] = request.body
            candidates = [(port, pid) for port, pid in latest.items() if pid not in killed]
            if candidates:
                port, pid = rng.choice(candidates)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append((time.monotonic(), port, pid))
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            else:
                skipped += 1  # every slot's worker is already a victim that has not been replaced yet
            next_kill += interval
            time.sleep(max(0.0, next_kill - time.monotonic()))  # the kill schedule, not a synchronisation
        chaos_end = time.monotonic()
        # Every slot serves again after the last kill.
        for port in ports:
            wait_for(lambda: [r for r in load.ok_after(chaos_end, port)], 10, f"port {port} serving after chaos")
    result.duration = time.monotonic() - started
    result.count_load(load)
    for when, port, pid in kills:
        answers = [r.done for r in load.requests if r.ok and r.port == port and r.done > when and r.body != pid]
        if answers:
            result.recovered(min(answers) - when)
        else:
            result.problems.append(f"port {port} never served after the kill of {pid}")
    unexplained = [f for f in load.failures if not attributable(f, kills)]
    spawned = len(re.findall(r"spawned worker", server.log()))
    backoffs = len(re.findall(r"before it was ready", server.log()))
    status = ctl(server.dir / "server.pid", "status")
    result.extra.update({"kills": len(kills), "forks": spawned, "in-flight failures": len(load.failures),
                         "boot backoffs": backoffs})
    result.check(len(kills) >= seconds / interval * 0.5, f"only {len(kills)} kills")
    result.check(not unexplained, f"{len(unexplained)} failures not on a killed worker: "
                                  f"{[f.error for f in unexplained[:3]]}")
    result.check(spawned <= workers + len(kills), f"{spawned} forks for {len(kills)} kills: a fork storm")
    result.check(status["master_pid"] == server.pid and server.proc.poll() is None, "the master changed")
    result.check(sorted(w["port"] for w in status["workers"] if w["ready"]) == ports,
                 f"slots after chaos: {status['workers']}")
    result.check(result.max_recovery is not None and result.max_recovery < 1.0,
                 f"a slot took {result.max_recovery} s to serve again")
    return result


def crash_loop(launcher: Launcher, crash_seconds: float = 4.0, workers: int = 2) -> Result:
    """Workers that die in on_start from the first boot: backoff in the log, master CPU bounded,
    and the save that fixes the code is served within a second (the reload forks at once,
    whatever the slots' backoff)."""
    result = Result("crash-looping app", f"{workers} workers dying in on_start, then the code is fixed")
    site = Site(launcher.tmp_path)
    path, text = bad_text(site, "exception in on_start")
    path.write_text(text)
    pid_file = launcher.tmp_path / "server.pid"
    port = free_ports(workers)
    proc, log_path = launcher.spawn([PYTHON, str(SERVE), str(site.project_file), "--port", str(port),
                                     "--workers", str(workers), "--pid", str(pid_file)],
                                    cwd=site.root, log_name="crash-loop.log")
    server = Running(proc, log_path, port, workers, pid_file)
    started = time.monotonic()
    server.wait_log(r"before it was ready; retrying in", timeout=15)
    cpu_before, wall_before = cpu_seconds(proc.pid), time.monotonic()
    wait_for(lambda: time.monotonic() - wall_before >= crash_seconds or proc.poll() is not None,
             crash_seconds + 5, "the crash loop to run")
    cpu = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - wall_before)
    delays = [float(d) for d in re.findall(r"before it was ready; retrying in ([\d.]+) s", server.log())]
    forks = len(re.findall(r"spawned worker", server.log()))
    site.restore_settings()  # the fix: saved like any edit, so the watcher reloads
    fixed = time.monotonic()
    wait_for(lambda: all(status_of(p) for p in server.ports), 15, "the fixed workers to serve")
    served = time.monotonic() - fixed
    result.recovered(served)
    result.duration = time.monotonic() - started
    per_slot = delays[::workers] if delays else []
    result.extra.update({"boot failures": len(delays), "forks": forks,
                         "backoff delays (slot 0)": "/".join(f"{d:g}" for d in per_slot[:8]),
                         "master CPU": f"{cpu * 100:.1f}%"})
    result.check(proc.poll() is None, "the master exited")
    result.check(len(set(delays)) >= 3 and max(delays) > min(delays), f"no growing backoff in the log: {delays}")
    result.check(forks <= workers * 10, f"{forks} forks in {crash_seconds} s: not backing off")
    result.check(cpu < 0.2, f"master used {cpu * 100:.0f}% CPU while workers crash-looped")
    result.check(served < 1.0, f"served {served:.2f} s after the fix")
    return result


def master_sigkill(launcher: Launcher, workers: int = 4, clients: int = 4) -> Result:
    """SIGKILL the master under load: no worker alive after 1 s, every port free."""
    result = Result("SIGKILL of the master", f"{workers} workers, {clients} clients")
    server = start_master(launcher, f"""
        Server(app, workers={workers}, host="127.0.0.1", port=PORT,
               pid_file=os.path.join(HERE, "server.pid")).start()
    """, workers)
    server.wait_ready()
    ports = master_ports(server, workers)
    with Load(ports, clients=clients, path="/", parse=int) as load:
        load.wait_requests(clients * 2)
        pids = children_of(server.pid)
        killed = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(5)
        wait_for(lambda: not any(process_alive(pid) for pid in pids), 5, "the orphaned workers to exit")
        gone = time.monotonic() - killed
        wait_for(lambda: all(port_free(port) for port in ports), 5, "every port to be free")
        freed = time.monotonic() - killed
    result.duration = time.monotonic() - killed
    before = [r for r in load.requests if r.done < killed]  # after the kill nothing is expected to serve
    result.requests = len(before)
    result.failures = sum(1 for r in before if not r.ok)
    result.recovered(freed)
    result.check(result.failures == 0, f"{result.failures} requests failed before the kill")
    result.extra.update({"workers": str(len(pids)), "last worker gone": f"{gone * 1000:.0f} ms",
                         "ports free": f"{freed * 1000:.0f} ms"})
    result.check(len(pids) == workers, f"{len(pids)} children before the kill")
    result.check(gone < 1.0, f"a worker outlived the master by {gone:.2f} s")
    result.check(freed < 1.0, f"ports free only after {freed:.2f} s")
    return result


def graceful_shutdown(launcher: Launcher, how: str = "QUIT", slow: float = 1.0, in_flight: int = 20,
                      workers: int = 4) -> Result:
    """``in_flight`` slow requests, then QUIT (all complete) or TERM (exit within term_timeout)."""
    from prefork.server import Server

    threads = -(-in_flight // workers)
    result = Result(f"shutdown by {how} with {in_flight} slow requests",
                    f"{workers} workers x {threads} threads, requests of {slow:g} s")
    server = start_master(launcher, f"""
        Server(app, workers={workers}, host="127.0.0.1", port=PORT, threads={threads}, graceful_timeout=30,
               pid_file=os.path.join(HERE, "server.pid")).start()
    """, workers)
    server.wait_ready()
    ports = master_ports(server, workers)
    outcomes: list[Any] = []

    def request(port: int) -> None:
        try:
            outcomes.append(http_get(port, f"/sleep/{slow}", timeout=slow + 30)[0])
        except OSError as exc:
            outcomes.append(repr(exc))

    clients = [threading.Thread(target=request, args=(ports[i % workers],), daemon=True) for i in range(in_flight)]
    for client in clients:
        client.start()

    def busy() -> bool:
        rows = ctl(server.dir / "server.pid", "status")["workers"]
        return sum(row["in_flight"] or 0 for row in rows) >= in_flight
    wait_for(busy, 10, f"{in_flight} requests in flight")
    sent = time.monotonic()
    server.signal(signal.SIGQUIT if how == "QUIT" else signal.SIGTERM)
    limit = slow + 5 if how == "QUIT" else Server.term_timeout + 1
    code = server.wait_exit(limit + 10)
    exited = time.monotonic() - sent
    for client in clients:
        client.join(slow + 30)
    result.duration = exited
    result.requests = len(outcomes)
    result.failures = sum(1 for o in outcomes if o != 200)
    result.extra.update({"exit status": str(code), "exit after": f"{exited * 1000:.0f} ms",
                         "completed": sum(1 for o in outcomes if o == 200)})
    result.check(code == 0, f"exit status {code}")
    result.check(exited < limit, f"exited {exited:.2f} s after {how} (limit {limit:g} s)")
    if how == "QUIT":
        result.check(result.failures == 0, f"{result.failures} of {in_flight} in-flight requests failed: "
                                           f"{[o for o in outcomes if o != 200][:3]}")
    result.check(not (server.dir / "server.pid").exists(), "pid file left behind")
    result.check(all(port_free(port) for port in ports), "a port is still bound")
    return result


# -- hostile input -----------------------------------------------------------------------------------

# Runs in the master (a when_ready hook): the master's end of worker 0's channel sends what no
# master would, reads every reply itself, and writes the counts to hostile.json.
WORKER_CHANNEL_ATTACK = """
    import random, struct, threading
    from prefork.control import MAX_FRAME, FrameReader, encode_frame, recv_message

    def frame(body):
        return struct.pack(">I", len(body)) + body

    def rss(pid):
        with open(f"/proc/{{pid}}/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith("VmRSS:"))

    def exchange(sock, payload, expected):
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        reader = FrameReader()
        replies = [recv_message(sock, reader, timeout=10) for _ in range(expected)]
        sender.join()
        return replies

    def attack(server):
        worker = server.workers[0]
        sock = worker._control
        sock.setblocking(True)
        sock.settimeout(10)
        rng = random.Random({seed})
        kinds = {{
            "random bytes": [frame(rng.randbytes(rng.randrange(1, 400))) for _ in range(200)],
            "invalid JSON": [frame(b"{{not json" + str(i).encode()) for i in range(100)],
            "not an object": [frame(b"[1, 2]"), frame(b"null"), frame(b"7"), frame(b'"ping"')],
            "deep nesting": [frame(b"[" * 100000)],
            "unknown command": [encode_frame({{"id": i, "command": f"nope{{i}}", "args": []}}) for i in range(100)],
            "wrong argument types": [frame(b'{{"id": 1, "command": 7, "args": []}}'),
                                     frame(b'{{"id": 2, "command": "ping", "args": {{"a": 1}}}}'),
                                     frame(b'{{"id": 3, "command": "ping", "args": "x"}}'),
                                     frame(b'{{"id": 4, "args": []}}'),
                                     encode_frame({{"id": 5, "command": "ping", "args": [1, 2, 3]}}),
                                     encode_frame({{"id": 6, "command": "stats", "args": [{{"x": 1}}]}})],
            "oversized frame": [struct.pack(">I", MAX_FRAME + 1) + b"x" * (MAX_FRAME + 1)],
        }}
        counts = {{}}
        pid = worker.pid
        for name, frames in kinds.items():
            replies = exchange(sock, b"".join(frames), len(frames))
            counts[name] = [len(frames), sum(1 for r in replies if r.get("ok") is False)]
        # A frame split across writes is reassembled, not an error.
        whole = encode_frame({{"id": 77, "command": "ping", "args": []}})
        sock.sendall(whole[:3])
        sock.sendall(whole[3:9])
        split = exchange(sock, whole[9:], 1)[0]
        counts["split frame answered"] = split.get("result") == "pong"
        burst = b"".join(encode_frame({{"id": i, "command": "nope" if i % 2 else "ping", "args": ["x"] * (i % 3 + 1)}})
                         for i in range({burst}))
        rss_values = [rss(pid)]
        bursts = []
        for _ in range(3):
            replies = exchange(sock, burst, {burst})
            bursts.append([len(replies), sum(1 for r in replies if r.get("ok") is False),
                           [r.get("id") for r in replies] == list(range({burst}))])
            rss_values.append(rss(pid))
        sock.setblocking(False)
        result = {{"kinds": counts, "bursts": bursts, "rss_kib": rss_values, "pid": pid,
                   "ping": worker.call("ping"), "alive": os.path.exists(f"/proc/{{pid}}")}}
        with open(os.path.join(HERE, "hostile.part"), "w") as handle:  # renamed whole: the test reads it once it exists
            json.dump(result, handle)
        os.rename(os.path.join(HERE, "hostile.part"), os.path.join(HERE, "hostile.json"))

    Server(app, workers=2, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "server.pid"),
           when_ready=attack).start()
"""


def _ctl_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def _ctl_exchange(path: str, payload: bytes, expected: int) -> list[dict[str, Any]]:
    """Send ``payload`` on one ctl connection and read ``expected`` replies."""
    with _ctl_connect(path) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        reader = FrameReader()
        replies = [recv_message(sock, reader, timeout=10) for _ in range(expected)]
        sender.join(10)
    return replies


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def hostile_input(launcher: Launcher, burst: int = 10_000, seed: int = 1) -> Result:
    """Hostile input on a worker's control channel and on the ctl socket, under HTTP load."""
    result = Result("hostile input: worker channel + ctl socket", f"2 workers, 4 clients, bursts of {burst}")
    # A directory uid 65534 may traverse (pytest's tmp_path is inside a 0700 one), so that only
    # the socket's mode and its peer-credential check stand in a stranger's way.
    where = Path(tempfile.mkdtemp(prefix="prefork-reliability-"))
    os.chmod(where, 0o711)
    try:
        return _hostile_input(launcher, where, burst, seed, result)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _hostile_input(launcher: Launcher, where: Path, burst: int, seed: int, result: Result) -> Result:
    from prefork.ctl import MAX_REQUEST, socket_path
    from tests.prefork.test_ctl import run_as_nobody

    server = start_master(launcher, WORKER_CHANNEL_ATTACK.format(seed=seed, burst=burst), 2, where=where)
    server.wait_log(r"spawned worker")  # the listening sockets are bound: clients queue from now on
    ports = master_ports(server, 2)
    started = time.monotonic()
    rng = random.Random(seed)
    path = socket_path(server.dir / "server.pid")
    with Load(ports, clients=4, path="/", parse=int) as load:  # the sockets are bound: clients queue
        wait_for(lambda: (server.dir / "hostile.json").exists() or server.proc.poll() is not None, 60,
                 "the worker channel attack to finish")
        report = json.loads((server.dir / "hostile.json").read_text())
        load.wait_requests(8)
        # worker channel counts
        split = report["kinds"].pop("split frame answered")
        result.check(split is True, "a split frame was not answered")
        for name, (sent, errors) in report["kinds"].items():
            result.check(sent == errors, f"worker channel, {name}: {errors} error replies for {sent}")
        for replies, errors, ordered in report["bursts"]:
            result.check(replies == burst and ordered, f"worker burst: {replies} replies for {burst}")
        grow = report["rss_kib"][-1] - report["rss_kib"][1]
        result.check(grow < 4096, f"worker RSS grew {grow} KiB over two bursts")
        result.check(report["ping"] == "pong" and report["alive"], "the attacked worker stopped answering")
        # ctl socket: mode 0600, every bad request answered with an error
        mode = stat.S_IMODE(os.stat(path).st_mode)
        result.check(mode == 0o600, f"ctl socket mode {mode:o}")
        kinds = {
            "random bytes": [_frame(rng.randbytes(rng.randrange(1, 400))) for _ in range(200)],
            "invalid JSON": [_frame(b"{not json" + str(i).encode()) for i in range(100)],
            "unknown command": [encode_frame(request(i, f"nope{i}", [])) for i in range(100)],
            "wrong argument types": [encode_frame(request(1, "workers", ["x"])),
                                     encode_frame(request(2, "workers", [-1])),
                                     encode_frame(request(3, "workers", [10 ** 9])),
                                     encode_frame(request(4, "workers", [[1]])),
                                     encode_frame(request(5, "status", [1])),
                                     _frame(b'{"id": 6, "command": "status", "args": {"a": 1}}'),
                                     _frame(b'{"id": 7, "command": ["status"], "args": []}')],
        }
        ctl_counts = {}
        for name, frames in kinds.items():
            replies = _ctl_exchange(path, b"".join(frames), len(frames))
            errors = sum(1 for r in replies if r.get("ok") is False)
            ctl_counts[name] = f"{errors}/{len(frames)}"
            result.check(errors == len(frames), f"ctl, {name}: {errors} error replies for {len(frames)}")
        oversized = _ctl_exchange(path, struct.pack(">I", MAX_REQUEST + 1) + b"x" * 100, 1)[0]
        result.check(oversized.get("ok") is False, "ctl: no error for an oversized frame")
        for cut in (1, 3, 4, 10):  # truncated frames from clients that vanish
            with _ctl_connect(path) as sock:
                sock.sendall(encode_frame(request(1, "status"))[:cut])
        raw_streams = 0
        for _ in range(30):  # unframed random bytes: an error reply or a close, never a crash
            with _ctl_connect(path) as sock:
                sock.sendall(struct.pack(">I", rng.randrange(1 << 32)) + rng.randbytes(rng.randrange(1, 300)))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            raw_streams += 1
        batch = b"".join(encode_frame(request(i, "nope" if i % 2 else "workers", ["x"])) for i in range(burst))
        rss_before = rss_kib(server.pid)
        rss_after = rss_before
        for round_ in range(3):
            replies = _ctl_exchange(path, batch, burst)
            errors = sum(1 for r in replies if r.get("ok") is False)
            result.check(errors == burst and replies[-1].get("id") == burst - 1,
                         f"ctl burst {round_}: {errors} error replies for {burst}")
            rss_after = rss_kib(server.pid)
        result.check(rss_after - rss_before < 8192, f"master RSS grew {rss_after - rss_before} KiB")
        # another uid is refused (the tests run as root: a forked child drops to uid 65534)
        if os.geteuid() == 0:
            refused = run_as_nobody(path)
            result.check(refused == "EACCES", f"uid 65534 got {refused!r} from a 0600 socket")
            os.chmod(path, 0o666)  # an operator's mistake: the peer credentials still refuse
            refused = run_as_nobody(path)
            os.chmod(path, 0o600)
            result.check(refused.startswith("permission denied"), f"uid 65534 got {refused!r} through SO_PEERCRED")
            ctl_counts["other uid"] = "refused"
        status = ctl(server.dir / "server.pid", "status")
        load.wait_requests(8)
    result.duration = time.monotonic() - started
    result.count_load(load)
    result.extra.update({"worker channel": {k: v for k, v in report["kinds"].items()},
                         "worker RSS KiB": report["rss_kib"], "ctl": ctl_counts, "raw streams": raw_streams,
                         "master RSS growth KiB": rss_after - rss_before})
    result.check(result.failures == 0, f"{result.failures} failed HTTP requests during the attack: "
                                       f"{[(f.port, f.error) for f in load.failures[:3]]}")
    result.check(status["master_pid"] == server.pid and len(status["workers"]) == 2, f"after: {status}")
    result.check(report["pid"] in {w["pid"] for w in status["workers"]}, "the attacked worker was replaced")
    result.extra["log lines"] = server.log().count("\n")
    return result


# -- the command line: two masters, resource faults ---------------------------------------------------

PLAIN_APP = '''\
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def cli_site(launcher: Launcher) -> Path:
    site = launcher.tmp_path / "cli-site"
    site.mkdir(exist_ok=True)
    (site / "plain.py").write_text(PLAIN_APP)
    return site


def cli_master(launcher: Launcher, site: Path, port: int, workers: int, pid_file: Path | str,
               log_name: str, preexec: Any = None, extra: list[str] = ()) -> tuple[subprocess.Popen, Path]:
    """``python -m prefork plain:app`` in its own session (killed by the launcher at close)."""
    args = [PYTHON, "-m", "prefork", "plain:app", "--port", str(port), "--workers", str(workers),
            "--pid", str(pid_file), "--graceful-timeout", "5", "--port-per-worker", *extra]
    if preexec is None:
        return launcher.spawn(args, cwd=site, log_name=log_name)
    log_path = launcher.tmp_path / log_name
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, cwd=site, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    launcher.procs.append(proc)
    return proc, log_path


def dead_pid() -> int:
    """The pid of a process that has exited (for a stale pid file)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def two_masters(launcher: Launcher, rounds: int = 4, workers: int = 2) -> Result:
    """Two masters started at once on one pid file: one serves, the other exits non-zero."""
    result = Result("two masters, one pid file", f"{rounds} rounds, {workers} workers each, half with a stale file")
    site = cli_site(launcher)
    started = time.monotonic()
    early = late = 0
    for round_ in range(rounds):
        pid_file = launcher.tmp_path / f"race{round_}.pid"
        if round_ % 2:
            pid_file.write_text(f"{dead_pid()}\n")
        bases = [free_ports(workers), free_ports(workers)]
        procs = [cli_master(launcher, site, base, workers, pid_file, f"race{round_}-{i}.log")[0]
                 for i, base in enumerate(bases)]
        try:
            wait_for(lambda: any(p.poll() is not None for p in procs), 20, "one of the two masters to exit")
        except AssertionError:
            result.problems.append(f"round {round_}: both masters still run; pid file says "
                                   f"{pid_file.read_text().strip() if pid_file.exists() else None}")
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            continue
        loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
        winner = 1 - loser
        message = (launcher.tmp_path / f"race{round_}-{loser}.log").read_text()
        result.check(procs[loser].returncode != 0, f"round {round_}: the loser exited {procs[loser].returncode}")
        result.check("names a live process" in message, f"round {round_}: unclear message: {message[-300:]!r}")
        if "is a master already running" in message:
            early += 1
        else:
            late += 1
        wait_for(lambda: all(try_pid(bases[winner] + i, timeout=2) for i in range(workers)), 15,
                 f"round {round_}: the survivor to serve")
        result.check(procs[winner].poll() is None, f"round {round_}: the survivor exited too")
        holder = pid_file.read_text().strip() if pid_file.exists() else None
        result.check(holder == str(procs[winner].pid), f"round {round_}: pid file names {holder}, "
                                                       f"survivor is {procs[winner].pid}")
        status = ctl(pid_file, "status")
        result.check(status["master_pid"] == procs[winner].pid, f"round {round_}: ctl reaches {status['master_pid']}")
        result.check(all(port_free(bases[loser] + i) for i in range(workers)), f"round {round_}: loser kept a port")
        procs[winner].send_signal(signal.SIGTERM)
        code = procs[winner].wait(15)
        result.check(code == 0 and not pid_file.exists(), f"round {round_}: survivor exit {code}, "
                                                          f"pid file left: {pid_file.exists()}")
        result.recovered(0.0)
    result.duration = time.monotonic() - started
    result.extra.update({"lost at the early check": early, "lost at the exclusive link": late})
    return result


def leftovers(where: Path) -> list[str]:
    """Files a failed start must not leave: pid files, their temporaries, control sockets."""
    return sorted(p.name for p in where.iterdir() if ".pid" in p.name)


def resource_faults(launcher: Launcher) -> Result:
    """Unwritable pid file directory, port in use, too few file descriptors: a clear error, no residue."""
    import resource

    result = Result("resource faults", "pid dir unwritable, port in use, RLIMIT_NOFILE 12 and 20")
    site = cli_site(launcher)
    started = time.monotonic()
    faults: dict[str, str] = {}

    def failed_start(name: str, proc: subprocess.Popen, log_path: Path, ports: list[int], expect: str,
                     where: Path) -> None:
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            result.problems.append(f"{name}: the master did not exit")
            return
        message = log_path.read_text()
        last = message.strip().splitlines()[-1] if message.strip() else ""
        faults[name] = f"exit {code}: {last[:90]}"
        result.check(code == 1, f"{name}: exit status {code}")
        result.check(expect in last and last.startswith("prefork: "), f"{name}: unclear error {last!r}")
        result.check("Traceback" not in message, f"{name}: a traceback instead of a message")
        result.check(not leftovers(where), f"{name}: left {leftovers(where)}")
        result.check(all(port_free(p) for p in ports), f"{name}: a port is still bound")

    # 1. the pid file's directory cannot be written: its "directory" is a regular file (root
    #    ignores permission bits, so a mode-0500 directory would not stop the test user).
    blocker = launcher.tmp_path / "not-a-directory"
    blocker.write_text("")
    base = free_ports(2)
    proc, log_path = cli_master(launcher, site, base, 2, blocker / "app.pid", "fault-piddir.log")
    failed_start("pid dir unwritable", proc, log_path, [base, base + 1],
                 f"cannot write the pid file {blocker / 'app.pid'}: Not a directory", launcher.tmp_path)

    # 2. a port already in use, for worker 0 and (after worker 0's was bound) for worker 1
    for taken_offset in (0, 1):
        base = free_ports(3)
        holder = socket.socket()
        holder.bind(("127.0.0.1", base + taken_offset))
        holder.listen()
        try:
            where = launcher.tmp_path / f"port{taken_offset}"
            where.mkdir()
            proc, log_path = cli_master(launcher, site, base, 3, where / "app.pid", f"fault-port{taken_offset}.log")
            failed_start(f"port {taken_offset} in use", proc, log_path,
                         [p for p in range(base, base + 3) if p != base + taken_offset],
                         f"{base + taken_offset} is in use", where)
        finally:
            holder.close()

    # 3. too few file descriptors to start: the pid file cannot even be written
    def limit(n: int) -> Callable[[], None]:
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    where = launcher.tmp_path / "nofile12"
    where.mkdir()
    base = free_ports(8)
    proc, log_path = cli_master(launcher, site, base, 8, where / "app.pid", "fault-nofile12.log", limit(12))
    failed_start("RLIMIT_NOFILE 12", proc, log_path, list(range(base, base + 8)), "Too many open files", where)

    # 4. enough descriptors to start but not for every worker: a clear error with backoff, the
    #    workers that fit serve, the master does not spin, and a stop leaves nothing behind.
    where = launcher.tmp_path / "nofile20"
    where.mkdir()
    base = free_ports(8)
    proc, log_path = cli_master(launcher, site, base, 8, where / "app.pid", "fault-nofile20.log", limit(20))
    wait_for(lambda: "Too many open files" in log_path.read_text() or proc.poll() is not None, 15,
             "the descriptor shortage to be logged")
    wait_for(lambda: try_pid(base, timeout=2), 15, "worker 0 to serve despite the shortage")
    cpu_before, wall_before = cpu_seconds(proc.pid), time.monotonic()
    wait_for(lambda: time.monotonic() - wall_before > 2.0, 5, "two seconds of shortage")
    cpu = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - wall_before)
    text = log_path.read_text()
    errors = len(re.findall(r"Too many open files", text))
    faults["RLIMIT_NOFILE 20"] = f"{errors} errors logged, master CPU {cpu * 100:.0f}%"
    result.check(cpu < 0.2, f"RLIMIT_NOFILE 20: the master spins at {cpu * 100:.0f}% CPU")
    result.check("error in this turn" not in text, "RLIMIT_NOFILE 20: the master loop crashed on EMFILE")
    result.check(errors < 200, f"RLIMIT_NOFILE 20: {errors} error lines in a few seconds")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(15)
    result.check(code == 0 and not leftovers(where), f"RLIMIT_NOFILE 20: exit {code}, left {leftovers(where)}")

    result.duration = time.monotonic() - started
    result.extra.update(faults)
    result.recoveries = 0
    return result


def pid_file_race(launcher: Launcher, rounds: int = 100) -> Result:
    """Two processes released at the same instant create one pid file (half over a stale one).

    The CLI race above is decided by interpreter start-up jitter; this one forks two contenders
    that wait on one pipe, so they reach PidFile.create() within microseconds of each other.
    """
    from prefork.pidfile import PidFile, PidFileError

    result = Result("pid file race (forked contenders)", f"{rounds} rounds x 2 processes, half over a stale file")
    path = launcher.tmp_path / "race.pid"
    started = time.monotonic()
    both = none = 0
    for round_ in range(rounds):
        if round_ % 2:
            path.write_text(f"{dead_pid()}\n")
        gate_r, gate_w = os.pipe()
        report_r, report_w = os.pipe()
        done_r, done_w = os.pipe()
        contenders = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:  # a contender: own session, waits for the gate, reports W(on) or L(ost)
                code = 0
                try:
                    os.setsid()
                    logging.getLogger("prefork.pidfile").disabled = True  # "replacing stale": expected
                    os.close(gate_w)
                    os.close(done_w)
                    os.read(gate_r, 1)
                    try:
                        PidFile(str(path)).create()
                        os.write(report_w, b"W")
                    except PidFileError:
                        os.write(report_w, b"L")
                    os.read(done_r, 1)  # stay alive (a live holder) until both have tried
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            contenders.append(pid)
        for fd in (gate_r, report_w, done_r):
            os.close(fd)
        os.close(gate_w)  # EOF releases both at once
        outcome = b""
        while len(outcome) < 2:
            chunk = os.read(report_r, 2)
            if not chunk:
                break
            outcome += chunk
        os.close(done_w)
        os.close(report_r)
        for pid in contenders:
            os.waitpid(pid, 0)
        if path.exists():
            path.unlink()
        both += outcome.count(b"W") > 1
        none += outcome.count(b"W") == 0
    result.duration = time.monotonic() - started
    result.requests = rounds
    result.failures = both + none
    result.extra.update({"both won": both, "neither won": none})
    result.check(both == 0, f"both contenders won in {both} of {rounds} rounds")
    result.check(none == 0, f"neither contender won in {none} of {rounds} rounds")
    return result


# -- a real nginx in front ------------------------------------------------------------------------------


def nginx_front(launcher: Launcher, reloads: int = 20, clients: int = 8, max_workers: int = 4,
                server_options: str | None = None) -> Result:
    """Load through nginx while TTIN, TTOU and code reloads change the workers behind it."""
    from prefork.upstream import ports_in
    from tests.prefork.test_upstream import free_port, nginx_command, prepare_prefix

    result = Result("nginx in front" + (f" ({server_options})" if server_options else ""),
                    f"{clients} keep-alive clients via nginx, TTIN x2, TTOU x2, {reloads} reloads")
    prefix = prepare_prefix(launcher.tmp_path / "nginx", free_port())
    nginx_port = int(re.search(r"listen 127\.0\.0\.1:(\d+);", (prefix / "nginx.conf").read_text()).group(1))
    upstream = prefix / "upstream.conf"
    reload_command = " ".join(nginx_command(prefix, "-s", "reload"))
    site = Site(launcher.tmp_path)
    extra = ["--upstream", str(upstream), "--upstream-reload", reload_command]
    if server_options is not None:
        extra += ["--upstream-server-options", server_options]
    running = site.start(launcher, workers=2, block=max_workers, extra=extra)
    pid_file = launcher.tmp_path / "server.pid"
    wait_for(lambda: upstream.exists() and ports_in(upstream.read_text()) == set(running.ports), 15,
             "the upstream file listing the first workers")
    nginx, _ = launcher.spawn(nginx_command(prefix, "-g", "daemon off;"), cwd=prefix, log_name="nginx.log")
    wait_for(lambda: status_of(nginx_port), 15, "nginx to answer")

    stale: list[str] = []
    watching = threading.Event()

    def listed_now() -> set[int]:
        try:
            return ports_in(upstream.read_text())
        except OSError:
            return set()

    def monitor() -> None:
        """Every port the upstream file lists must have a listening socket behind it."""
        while not watching.is_set():
            listed = listed_now()
            dead = [port for port in listed if port_free(port)]
            # ... if the file still lists it after the check: a port dropped the right way (the file
            # rewritten, then the socket closed) may have been dropped while the ports were checked.
            dead = [port for port in dead if port in listed_now()] if dead else dead
            if dead:
                stale.append(f"{sorted(listed)} lists {dead} with nothing listening")
            watching.wait(0.05)

    def live_ports() -> set[int]:
        return {row["port"] for row in ctl(pid_file, "status")["workers"] if row["ready"]}

    workers = 2
    steps = ["TTIN"] + ["edit"] * (reloads // 2) + ["TTIN", "TTOU"] + ["edit"] * (reloads - reloads // 2) + ["TTOU"]
    watcher = threading.Thread(target=monitor, daemon=True)
    step_ports: list[tuple[str, set[int], float]] = []
    started = time.monotonic()
    with Load([nginx_port], clients=clients, path=APP_PATH) as load:
        watcher.start()
        load.wait_requests(clients)
        for step in steps:
            began = time.monotonic()
            if step == "edit":
                site.edit(site.level + 1)
            else:
                workers += 1 if step == "TTIN" else -1
                running.signal(getattr(signal, f"SIG{step}"))
            wanted = {running.port + i for i in range(workers)}

            def converged() -> bool:
                if live_ports() != wanted or ports_in(upstream.read_text()) != wanted:
                    return False
                fresh = [r for r in load.ok_after(began) if Site.level_of(r.body) == site.level]
                if step == "TTIN" and max(wanted) not in {r.body["port"] for r in fresh}:
                    return False  # nginx has not loaded the new upstream list yet
                return len(fresh) >= 10  # nginx serves the new code

            try:
                wait_for(converged, 20, f"nginx and the upstream file after {step}")
            except AssertionError as exc:
                result.problems.append(f"{exc}: live {sorted(live_ports())}, file "
                                       f"{sorted(ports_in(upstream.read_text()))}")
                break
            result.recovered(time.monotonic() - began)
            step_ports.append((step, wanted, began))
        watching.set()
        watcher.join(5)
    result.duration = time.monotonic() - started
    result.count_load(load)
    latencies = sorted(r.done - r.sent for r in load.requests if r.ok)
    errors = (prefix / "error.log").read_text()
    result.extra.update({"stale upstream samples": len(stale),
                         "max latency": f"{latencies[-1] * 1000:.0f} ms" if latencies else "-",
                         "p99 latency": f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms" if latencies else "-"})
    no_live = errors.count("no live upstreams")
    result.extra["nginx 'no live upstreams' (502)"] = no_live
    result.check(result.failures == 0, f"{result.failures} failed requests through nginx "
                                       f"({no_live} 'no live upstreams'): {[f.error[:40] for f in load.failures[:3]]}")
    result.check(not stale, f"upstream file listed dead ports: {stale[:3]}")
    # Through nginx, each step's responses came from that step's workers only (a TTIN step
    # converged only once nginx used the new worker).
    for (step, wanted, began), (_, _, ended) in zip(step_ports, step_ports[1:] + [("end", set(), time.monotonic())]):
        seen = {r.body["port"] for r in load.requests if r.ok and began <= r.sent and r.done <= ended}
        result.check(seen <= wanted | {max(wanted) + 1}, f"after {step}: nginx used ports {sorted(seen - wanted)}")
    result.extra["nginx upstream errors (retried)"] = len(re.findall(r"while reading response header from upstream", errors))
    disabled = errors.count("temporarily disabled")
    result.extra["nginx 'temporarily disabled'"] = disabled
    # A listed port always has the master's socket behind it: nginx must never take one out of
    # rotation (with max_fails=1, the default, one retried error per port during a reload does,
    # for fail_timeout, and with every port out nginx answers 502 "no live upstreams").
    result.check(disabled == 0, f"nginx took live worker ports out of rotation {disabled} times "
                                f"(server options {server_options or 'default'!r})")
    result.check(nginx.poll() is None and running.proc.poll() is None, "nginx or the master exited")
    return result
