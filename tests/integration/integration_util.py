"""Helpers for the end-to-end tests (their fixtures are in conftest.py): real servers in their own
sessions, free ports, HTTP polls.

Every process is started with start_new_session=True and killed by process group at teardown.
Waiting is always on a condition with a deadline (an HTTP answer, a log line), never a bare sleep.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PYTHON = sys.executable
DEADLINE = 15.0  # seconds; only matters when something is broken

# The reload log formats (docs/integration.md shows examples; test_readme_idiom checks them).
SUCCESS_LINE = re.compile(r"^reload #\d+: (?:\d+ modules? \([\w., ]+\)|fresh generation \(.+\)|"
                          r"workers respawned \(.+\)) in \d+ ms; \d+ workers? replaced \(generation \d+\)$")
FAILURE_HEAD = re.compile(r"^reload #\d+ failed: \S+\.py:\d+: (\w+Error: .+|hung: the import did not "
                          r"finish within \d+ s and was (killed|interrupted))$")
STILL_SERVING = "  still serving generation {}; the changes stay pending: save a fix to retry them all"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int) -> int:
    """Return a base port such that base..base+count-1 are free on 127.0.0.1 right now.

    Chosen below the ephemeral range, where the kernel does not hand out ports to the many
    client connections (and port-0 servers) of tests running at the same time.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, max(10001, low - count - 1))
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition",
             interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


def http_get(port: int, path: str = "/status.json", timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status(port: int) -> dict[str, Any]:
    """The example's /status.json from the worker on ``port``."""
    code, body = http_get(port)
    assert code == 200, body
    return json.loads(body)


@dataclass
class Running:
    """A server process started by a test."""

    proc: subprocess.Popen
    log_path: Path
    port: int
    workers: int
    pid_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return [self.port + i for i in range(self.workers)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def messages(self, prefix: str = "prefork.reload: ") -> list[str]:
        """The reload logger's messages (multi-line blocks kept whole), without timestamps."""
        found, current = [], None
        for line in self.log().splitlines():
            head, sep, message = line.partition(prefix)
            if sep and re.match(r"^\d{4}-\d\d-\d\d ", head):
                current = [message]
                found.append(current)
            elif current is not None and line.startswith("  "):
                current.append(line)
            else:
                current = None
        return ["\n".join(block) for block in found]

    def wait_log(self, pattern: str, timeout: float = DEADLINE, count: int = 1) -> list[str]:
        """Wait until ``pattern`` (a regex) matches ``count`` times in the server's output."""
        regex = re.compile(pattern)

        def found() -> list[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            hits = regex.findall(self.log())
            return hits if len(hits) >= count else None

        try:
            return wait_for(found, timeout, f"log pattern {pattern!r} x{count}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None

    def wait_ready(self, ready: Callable[[int], Any], timeout: float = DEADLINE) -> None:
        """Wait until ``ready(port)`` succeeds for every worker port."""
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            return all(ready(port) is not None for port in self.ports)

        try:
            wait_for(check, timeout, "every worker to answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None

    def statuses(self) -> list[dict[str, Any]]:
        return [status(port) for port in self.ports]

    def wait_all(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = DEADLINE) -> list[dict[str, Any]]:
        """Poll every worker until each one's status satisfies ``predicate``."""
        def check() -> list[dict[str, Any]] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            found = self.statuses()
            return found if all(predicate(s) for s in found) else None

        try:
            return wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)


class Launcher:
    """Starts servers in their own sessions; kills every process group at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], cwd: Path, log_name: str = "server.log",
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log_path = self.tmp_path / log_name
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs.append(proc)
        return proc, log_path

    def example(self, project_dir: Path, workers: int = 2, extra: list[str] = (),
                pid: bool = True, reload_timeout: float | None = None) -> Running:
        """Start examples/server.py on ``project_dir`` and wait until every worker answers."""
        def command(port: int) -> list[str]:
            args = [PYTHON, str(EXAMPLES / "server.py"), "--port", str(port), "--workers", str(workers),
                    "--project", str(project_dir / "project.py"), *extra]
            if pid:
                args += ["--pid", str(self.tmp_path / "server.pid")]
            if reload_timeout is not None:
                args += ["--reload-timeout", str(reload_timeout)]
            return args

        return self.start(command, workers, self.tmp_path / "server.pid" if pid else None)

    def start_http(self, command: Callable[[int], list[str]], workers: int, cwd: Path | None = None,
                   pid_file: Path | None = None, path: str = "/") -> Running:
        """Like start() for any app: ready when every worker answers ``path`` with any status."""
        return self.start(command, workers, pid_file, cwd, ready=lambda port: http_get(port, path))

    def start(self, command: Callable[[int], list[str]], workers: int, pid_file: Path | None = None,
              cwd: Path | None = None, ready: Callable[[int], Any] = status) -> Running:
        """Run ``command(port)`` on free ports until it serves (a lost race for a port is retried)."""
        for attempt in range(5):
            port = free_ports(workers)
            proc, log_path = self.spawn(command(port), cwd=cwd or self.tmp_path,
                                        log_name=f"server-{len(self.procs)}.log")
            running = Running(proc, log_path, port, workers, pid_file)
            try:
                running.wait_ready(ready)
                return running
            except AssertionError:
                if proc.poll() is not None and "already in use" in running.log() and attempt < 4:
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def save(path: Path, text: str) -> None:
    """Save ``text`` atomically (temporary file + rename over), as vim or VS Code's safe write do.

    Tests that count reloads save atomically: a truncate-then-write save can be seen half-way
    (an empty module), which is a failed reload followed by a good one, and shifts the numbering.
    """
    temporary = path.with_name(f".{path.name}.saving")
    temporary.write_text(text)
    os.replace(temporary, path)


def rewrite(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in a file (must be present), as an editor save would."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    save(path, text.replace(old, new, 1))


def new_generation(master_pid: int, above: int = 0) -> int | None:
    """The pid of a generation process numbered above ``above`` (a child of the master), or None.

    Generations are adopted by the master and titled ``prefork generation N`` (setproctitle).
    """
    found = None
    for title, pid in children_by_title(master_pid).items():
        match = re.match(r"prefork generation (\d+)", title)
        if match and int(match.group(1)) > above:
            found = pid
    return found


def process_title(pid: int) -> str:
    """A process's title (its command line, which prefork's processes set), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_by_title(master: int) -> dict[str, int]:
    """The master's live children by process title (setproctitle is a test dependency)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {title: int(pid) for pid in children if (title := process_title(int(pid)))}


def process_state(pid: int) -> str:
    """The process state letter from /proc (Z: a zombie, dead but not reaped), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
