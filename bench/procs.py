"""Process plumbing for the benchmarks: spawn in a new session, find the session's processes, measure
their CPU and PSS from /proc, probe HTTP on loopback, and kill the whole group."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port(span: int = 1) -> int:
    """Return a loopback port p such that p..p+span-1 were all free just now.

    Chosen below the kernel's range of ephemeral ports: the client ends of closed connections wait
    in TIME_WAIT there, and a run against gunicorn's sync workers (a connection per request)
    leaves tens of thousands of them, which no server can bind over.
    """
    low = _ephemeral_low()
    for _ in range(500):
        port = random.randrange(10000, low - span)
        if all(_port_free(port + i) for i in range(span)):
            return port
    raise RuntimeError("no free port range found")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass
class Spawned:
    """A process started in its own session, with its output in a log file."""

    popen: subprocess.Popen
    log: Path
    started: float  # time.monotonic() just before spawn

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Kill the whole session: TERM, then KILL whatever is left after `timeout`."""
        kill_group(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while session_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(self.pid, signal.SIGKILL)
        for pid in session_pids(self.pid):  # a member that left the group but not the session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def spawn(cmd: list[str], cwd: str, env: dict[str, str], log: Path) -> Spawned:
    """Start cmd in a new session with stdout+stderr appended to `log`, stdin on /dev/null."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        started = time.monotonic()
        popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    return Spawned(popen, log, started)


def kill_group(pgid: int, sig: int) -> None:
    """Send sig to process group pgid, ignoring a group that is already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def session_pids(sid: int) -> list[int]:
    """Return the live (non-zombie) processes whose session id is sid."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == sid:
                pids.append(int(entry))
    return sorted(pids)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Return user+system CPU seconds (all threads; clock-tick resolution) of each live pid."""
    out = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            out[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def session_cpu_seconds(sid: int) -> float:
    """CPU seconds used so far by the live processes of a server's session (clock-tick resolution)."""
    return sum(cpu_seconds(session_pids(sid)).values())


def connections_per_process(pids: list[int], port: int) -> list[int]:
    """How many established TCP connections to local ``port`` each of ``pids`` holds, largest first.

    From /proc: the sockets of /proc/net/tcp in state ESTABLISHED on the port, matched by inode to
    the file descriptors of each process (a socket inherited by two processes counts for both).
    """
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    counts = []
    for pid in pids:
        held = sum(1 for link in _fd_links(pid) if link.startswith("socket:[") and link[8:-1] in inodes)
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


def _fd_links(pid: int) -> list[str]:
    """What the open file descriptors of pid point to (those that close meanwhile are left out)."""
    links = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return links


def pss_kib(pid: int) -> int:
    """Return the proportional set size of pid in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass
class Response:
    """One HTTP exchange as the benchmark sees it."""

    status: int        # 0 when the request failed (refused, reset, timeout)
    body: str
    done: float        # time.monotonic() when it completed
    error: str = ""


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> Response:
    """GET path on a fresh connection (Connection: close) and return the status and body."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        return Response(0, "", time.monotonic(), type(exc).__name__)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Response(0, "", time.monotonic(), "bad response")
    return Response(status, body.decode(errors="replace"), time.monotonic())


def wait_http(port: int, path: str, deadline: float, proc: Spawned | None = None) -> float | None:
    """Poll path until it answers 200; return the monotonic time of that answer, None on deadline.

    Gives up early when `proc` has exited. The 2 ms pause between refused attempts is the bench's
    own resolution, not a server's.
    """
    while time.monotonic() < deadline:
        r = http_get(port, path, timeout=max(0.1, deadline - time.monotonic()))
        if r.status == 200:
            return r.done
        if proc is not None and not proc.alive():
            return None
        time.sleep(0.002)
    return None


def parse_version(body: str) -> tuple[str, str, int] | None:
    """Parse `version=ROOT:LEAF pid=PID` into (ROOT, LEAF, PID)."""
    try:
        version, pid = body.split()
        root, leaf = version.split("=", 1)[1].split(":", 1)
        return root, leaf, int(pid.split("=", 1)[1])
    except ValueError:
        return None
