"""Helpers for the prefork tests: a master in a subprocess, free ports, HTTP, waiting with deadlines.

Every master runs in its own session (start_new_session=True) and is killed by process group when
the test ends, workers included.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

HEADER = f"""\
import json, logging, os, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
from prefork import Server, Worker, CommandError
HERE = os.path.dirname(os.path.abspath(__file__))
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 0


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{{os.getpid()}}".encode()]


def note(name, text):
    with open(os.path.join(HERE, name), "a") as handle:
        handle.write(f"{{text}}\\n")
"""


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)  # a poll with a deadline, not a synchronising sleep


def port_block(count: int) -> int:
    """Return a base port such that ``count`` consecutive ports are free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for offset in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no block of free ports found")


def http_get(port: int, path: str = "/", timeout: float = 10.0,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET on a fresh connection; return (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def try_pid(port: int, timeout: float = 2.0) -> int | None:
    """The pid of the worker answering on ``port``, or None when nothing answers."""
    try:
        status, _, body = http_get(port, timeout=timeout)
    except OSError:
        return None
    return int(body) if status == 200 else None


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:  # FileNotFoundError; or ProcessLookupError when it is reaped between open and read
        return True


class Master:
    """A prefork master running ``body`` (appended to HEADER) in a subprocess."""

    def __init__(self, tmp_path: Path, body: str, port: int, name: str = "server",
                 preexec_fn: Callable[[], Any] | None = None) -> None:
        self.dir = tmp_path
        self.port = port
        self.script = tmp_path / f"{name}.py"
        self.script.write_text(HEADER + textwrap.dedent(body))
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, str(self.script), str(port)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=preexec_fn)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """Wait until ``pattern`` (a regex) matches ``count`` times in the log; return the matches."""
        def found() -> list[str] | None:
            matches = re.findall(pattern, self.log())
            if len(matches) >= count:
                return matches
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited ({self.proc.returncode}) before {pattern!r}:\n{self.log()}")
            return None
        return wait_until(found, timeout, f"{pattern!r} in the log")

    def wait_ready(self, timeout: float = 15.0) -> None:
        self.wait_log(r"all \d+ workers ready", timeout)

    def read(self, name: str) -> list[str]:
        path = self.dir / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_file(self, name: str, lines: int = 1, timeout: float = 10.0) -> list[str]:
        return wait_until(lambda: len(self.read(name)) >= lines and self.read(name), timeout, f"{lines} lines in {name}")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master did not exit within {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
