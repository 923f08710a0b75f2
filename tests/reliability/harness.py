"""Shared machinery of the reliability scenarios (pytest quick runs and bench/soak.py long runs).

- ``Load``: client threads sending GETs on keep-alive connections and recording every request
  (port, send time, end time, outcome, body), so scenarios count instead of guessing.
- ``Result``: one row of the reliability table (scenario, load, duration, requests, failures,
  recoveries, max recovery time, retried requests) plus the scenario's own counts.
- small process helpers: ctl calls with a timer, the children of a pid, a port's state.

Processes are started through tests.integration.integration_util.Launcher (own session each, killed by
process group at close), so this module only adds what the reliability scenarios need on top.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/soak.py imports this module from outside pytest
    sys.path.insert(0, str(REPO))

from prefork.ctl import call as ctl_call, socket_path  # noqa: E402
from tests.integration.integration_util import (  # noqa: E402  (shared helpers of the end-to-end tests)
    EXAMPLES, PYTHON, Launcher, Running, free_ports, wait_for)

__all__ = ["EXAMPLES", "PYTHON", "Launcher", "Running", "free_ports", "wait_for", "Load", "Request",
           "Result", "ctl", "timed_ctl", "children_of", "port_free", "process_alive", "cpu_seconds"]

DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, the bytes of ours the peer's TCP acknowledged
# (since Linux 4.2), follows 104 bytes of older fields and two u64 pacing rates.
_TCPI_BYTES_ACKED = struct.Struct("=Q")
_TCPI_BYTES_ACKED_OFFSET = 120


def bytes_acked(sock: socket.socket) -> int | None:
    """How many bytes sent on ``sock`` its peer's TCP has acknowledged (None: not known here)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_BYTES_ACKED_OFFSET + _TCPI_BYTES_ACKED.size:
        return None
    return _TCPI_BYTES_ACKED.unpack_from(info, _TCPI_BYTES_ACKED_OFFSET)[0]


class ProbedConnection(http.client.HTTPConnection):
    """An HTTPConnection that keeps a second descriptor of its socket (``probe``).

    http.client closes its socket as soon as a connection drops; the probe still answers TCP_INFO
    afterwards, which tells whether the server had taken the request in (its TCP acknowledged the
    bytes) or had closed the connection before the request reached it. ``discard()`` closes both.
    """

    probe: socket.socket | None = None

    def connect(self) -> None:
        super().connect()
        self.probe = self.sock.dup()

    def acked(self) -> int | None:
        return None if self.probe is None else bytes_acked(self.probe)

    def discard(self) -> None:
        self.close()
        if self.probe is not None:
            self.probe.close()
            self.probe = None


@dataclass
class Request:
    """One request as a client saw it (times from time.monotonic())."""

    port: int
    sent: float
    done: float
    ok: bool
    body: Any = None          # the parsed body when ok
    error: str | None = None  # why it failed
    conn_opened: float = 0.0  # when the connection it went out on was opened
    retried: bool = False     # a second attempt after the server closed an idle keep-alive connection


class Load:
    """``clients`` threads, each on its own keep-alive connection, GETting ``path`` until stopped.

    Client i talks to ``ports()[i % len(ports())]`` (``ports`` may be a list or a callable that
    follows a changing worker count).

    A dropped request (the connection closed or reset without an answer) is a failure when the
    server had accepted it: it read the request, then hung up (see ``_server_took_it`` for how TCP
    tells). Only when the server closed a reused keep-alive connection without having read the
    request (it had closed it as idle before the request came, or closed it with the request still
    unread: the race every HTTP client meets when a server closes idle connections) does the client
    retry, once, on a fresh connection, as browsers and nginx do. Those first attempts are kept
    apart in ``retried`` (counted by ``retries``), never in ``requests``; a retry that fails too is
    a failure, and so is any drop on a fresh connection. ``retry=False`` makes every drop a failure.
    """

    def __init__(self, ports: list[int] | Callable[[], list[int]], clients: int = 8,
                 path: str = "/status.json", parse: Callable[[bytes], Any] = json.loads,
                 timeout: float = 15.0, retry: bool = True) -> None:
        self._ports = ports if callable(ports) else (lambda: list(ports))
        self.path = path
        self.parse = parse
        self.timeout = timeout
        self.retry = retry
        self.requests: list[Request] = []
        self.retried: list[Request] = []  # dropped first attempts that were retried (not in requests)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
                         for i in range(clients)]
        self.started = 0.0
        self.stopped = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "Load":
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.stopped = time.monotonic()

    # -- what was seen ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def retries(self) -> int:
        """How many requests needed a second attempt (the server had closed their idle connection)."""
        return len(self.retried)

    @property
    def failures(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    def ok_after(self, moment: float, port: int | None = None) -> list[Request]:
        return [r for r in list(self.requests) if r.ok and r.sent >= moment and (port is None or r.port == port)]

    def wait_requests(self, more: int, timeout: float = 15.0) -> None:
        """Wait until ``more`` further requests succeeded (the load is flowing)."""
        target = len([r for r in self.requests if r.ok]) + more
        wait_for(lambda: len([r for r in list(self.requests) if r.ok]) >= target, timeout,
                 f"{more} more successful requests")

    # -- the client thread -----------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _run(self, number: int) -> None:
        conn: ProbedConnection | None = None
        opened = 0.0
        while not self._stop.is_set():
            ports = self._ports()
            if not ports:
                time.sleep(0.01)  # nothing to talk to yet (a scenario's port list is changing)
                continue
            port = ports[number % len(ports)]
            if conn is not None and conn.port != port:
                conn.discard()
                conn = None
            sent = time.monotonic()
            retried = False
            for attempt in (1, 2):
                reused = conn is not None
                acked_before = conn.acked() if conn is not None else None
                try:
                    if conn is None:
                        conn = ProbedConnection("127.0.0.1", port, timeout=self.timeout)
                        conn.connect()
                        opened = time.monotonic()
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                    data = response.read()
                    if response.getheader("Connection", "").lower() == "close":
                        conn.discard()
                        conn = None
                    if response.status != 200:
                        self._record(Request(port, sent, time.monotonic(), False, None,
                                             f"status {response.status}: {data[:200]!r}", opened, retried))
                    else:
                        self._record(Request(port, sent, time.monotonic(), True, self.parse(data),
                                             None, opened, retried))
                    break
                except DROPPED as exc:
                    accepted = conn is None or _server_took_it(exc, acked_before, conn.acked())
                    if conn is not None:
                        conn.discard()
                    conn = None
                    dropped = Request(port, sent, time.monotonic(), False, None, repr(exc), opened, retried)
                    if attempt == 1 and reused and self.retry and not accepted:
                        retried = True
                        with self._lock:
                            self.retried.append(dropped)
                        continue
                    if accepted:
                        dropped.error = f"{exc!r} after the server had accepted the request"
                    self._record(dropped)
                    break
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    if conn is not None:
                        conn.discard()
                    conn = None
                    self._record(Request(port, sent, time.monotonic(), False, None, repr(exc), opened, retried))
                    break
        if conn is not None:
            conn.discard()


def _server_took_it(exc: BaseException, before: int | None, after: int | None) -> bool:
    """True when the drop shows the server had read the request before it hung up.

    How a connection ends tells (Linux, and any TCP that resets on unread data):

    - the server read the request, then closed (a bug, or a worker killed mid-request): its TCP
      acknowledged the bytes, and the close sent a FIN: end-of-file with the request acknowledged;
    - the server closed an idle connection before the request arrived: a FIN first, and the request
      was answered with a reset, never acknowledged: end-of-file (or EPIPE) without acknowledgement;
    - the server closed with the request still unread in its socket (the moment between "idle?" and
      close() that no server closing idle connections can avoid): a reset without a FIN, ECONNRESET.

    Only the first is the server's failure; the others are the race HTTP clients retry. Unknown
    (no TCP_INFO) counts as read: a drop is a failure unless shown harmless.
    """
    if isinstance(exc, ConnectionResetError) and not isinstance(exc, http.client.RemoteDisconnected):
        return False  # reset, not end-of-file (RemoteDisconnected is a ConnectionResetError too)
    return before is None or after is None or after > before


@dataclass
class Result:
    """One row of the reliability table, plus the scenario's own counts in ``extra``."""

    scenario: str
    load: str
    duration: float = 0.0
    requests: int = 0
    failures: int = 0
    recoveries: int = 0
    max_recovery: float | None = None  # seconds
    retried: int = 0  # requests sent again after the server closed their idle connection (not failures)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what the scenario found wrong

    def count_load(self, load: Load) -> None:
        """Take the requests, failures and retried requests of ``load``."""
        self.requests = load.count
        self.failures = len(load.failures)
        self.retried = load.retries

    def recovered(self, seconds: float) -> None:
        self.recoveries += 1
        self.max_recovery = seconds if self.max_recovery is None else max(self.max_recovery, seconds)

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def row(self) -> str:
        recovery = "-" if self.max_recovery is None else f"{self.max_recovery * 1000:.0f} ms"
        extra = ", ".join(f"{k}={v}" for k, v in self.extra.items())
        verdict = "ok" if not self.problems else "FAIL: " + "; ".join(self.problems)
        return (f"| {self.scenario} | {self.load} | {self.duration:.1f} s | {self.requests} | {self.failures} | "
                f"{self.recoveries} | {recovery} | {self.retried} | {extra} | {verdict} |")

    def assert_ok(self) -> None:
        assert not self.problems, f"{self.scenario}: " + "; ".join(self.problems) + f"\n{self.row()}"


TABLE_HEADER = ("| scenario | load | duration | requests | failures | recoveries | max recovery | retried | counts "
                "| verdict |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


# -- processes, ports, the control socket ----------------------------------------------------------


def ctl(pid_file: Path | str, command: str, *args: Any, timeout: float = 5.0) -> Any:
    """``prefork ctl`` in-process: send ``command`` to the master owning ``pid_file``."""
    return ctl_call(socket_path(pid_file), command, *args, timeout=timeout)


def timed_ctl(pid_file: Path | str, command: str = "status", timeout: float = 5.0) -> tuple[float, Any]:
    """(seconds the master took to answer, the answer)."""
    start = time.monotonic()
    answer = ctl(pid_file, command, timeout=timeout)
    return time.monotonic() - start, answer


def _live_processes_where(field: int, value: int) -> set[int]:
    """Live (non-zombie) pids whose /proc/PID/stat field ``field`` (after the name) equals ``value``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[field]) == value and fields[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    return _live_processes_where(1, pid)


def session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes in session ``sid``."""
    return _live_processes_where(3, sid)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1 (nobody listens on it).

    SO_REUSEADDR as any server sets it: closed connections in TIME_WAIT do not hold the port.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def monotonic_per_port(requests: Iterable[Request], key: Callable[[Any], Any]) -> list[str]:
    """Responses per port must never go back: no older ``key(body)`` after a newer one was served.

    Ordered by completion time; only requests that did not overlap are compared (two requests in
    flight at once on different connections may legitimately complete in either order).
    """
    problems = []
    by_port: dict[int, list[Request]] = {}
    for request in requests:
        if request.ok:
            by_port.setdefault(request.port, []).append(request)
    for port, seen in by_port.items():
        seen.sort(key=lambda r: r.done)
        newest: tuple[Any, float] | None = None  # (value, completion time of its first sighting)
        for request in seen:
            value = key(request.body)
            if newest is not None and value < newest[0] and request.sent > newest[1]:
                problems.append(f"port {port}: served {value!r} at +{request.done:.3f} after {newest[0]!r}")
            if newest is None or value > newest[0]:
                newest = (value, request.done)
    return problems
