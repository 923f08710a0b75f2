"""A server started from a script in its own session, and waits with deadlines (tests/asgi)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.realapps.harness import free_port_block

PYTHON = sys.executable
DEADLINE = 20.0  # seconds; only reached when something is broken
POLL = 0.02


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


class ScriptServer:
    """``source`` run with ``PORT``, ``WORKERS`` and ``DIR`` (its folder) in the environment."""

    def __init__(self, folder: Path, source: str, workers: int) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True)
        self.script = self.dir / "serve.py"
        self.script.write_text(textwrap.dedent(source).lstrip("\n"))
        self.log_path = self.dir / "server.log"
        self.pid_file = self.dir / "server.pid"
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ctl_path(self) -> str:
        return str(self.pid_file) + ".ctl"

    def url(self, path: str = "/", worker: int = 0, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port + worker}{path}"

    def start(self, wait: bool = True) -> ScriptServer:
        """Start on free ports; with ``wait``, until the log says every worker is ready."""
        self.port = free_port_block(self.workers)
        env = {**os.environ, "PORT": str(self.port), "WORKERS": str(self.workers), "DIR": str(self.dir),
               "PID_FILE": str(self.pid_file), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.dir)}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([PYTHON, str(self.script)], cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        if wait:
            self.wait_log(r"all \d+ workers? ready")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = DEADLINE) -> list[str]:
        """Wait until ``pattern`` matches ``count`` times in the log (the server must stay alive)."""
        regex = re.compile(pattern)

        def found() -> list[str]:
            matches = regex.findall(self.log())
            if len(matches) >= count:
                return matches
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}) before /{pattern}/:\n{self.log()}")
            return []

        try:
            return wait_for(found, f"/{pattern}/ x{count} in the log", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """TERM the process group, then KILL it after a deadline (teardown)."""
        if self.proc is None:
            return
        for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
                # The workers and generations of a group outlive a master killed by SIGKILL: kill them too.
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
            break
