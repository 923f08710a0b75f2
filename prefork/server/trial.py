"""The reload trial: a child forked from the master loads the pending changes first.

The child runs ``project.load()`` and resolves the app, then reports one JSON line over a pipe and
exits; the master applies the load itself only when the trial succeeded, so an import that hangs or
has side effects outside the reload set never touches the master. Functions here run in the trial
child unless their docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from projectr import LoadError, Project

from prefork.apps import resolve_app
from prefork.proctitle import set_title
from prefork.server.failures import describe_exception, describe_load_error


@dataclass
class Trial:
    """A trial load running in a forked child, as the master sees it."""

    pid: int
    fd: int
    started: float
    buffer: bytearray = field(default_factory=bytearray)
    timed_out: bool = False
    superseded: bool = False
    timers: list[Any] = field(default_factory=list)

    def fileno(self) -> int:
        """The read end of the trial's report pipe (for the master's selector)."""
        return self.fd


def run_trial(project: Project, app_spec: Any, write_fd: int) -> None:
    """Load the pending changes and resolve the app; report JSON lines on ``write_fd``; exit."""
    status = 0
    try:
        isolate_trial(write_fd)
        started = time.perf_counter()
        loaded = project.load()
        resolve_app(app_spec)
        report_line(write_fd, ok=True, loaded=loaded,
                      ms=(time.perf_counter() - started) * 1000.0)
    except LoadError as exc:
        report_line(write_fd, ok=False, **describe_load_error(exc))
    except BaseException as exc:  # noqa: BLE001 - the trial must report whatever happened
        report_line(write_fd, ok=False, **describe_exception(exc, project))
        status = 1
    finally:
        os._exit(status)  # no atexit handlers, no flushing of the master's buffers


def isolate_trial(write_fd: int) -> None:
    """Detach the trial child from the master's signals, output and lifetime (trial child)."""
    signal.set_wakeup_fd(-1)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGTTIN", "SIGTTOU", "SIGUSR1",
                 "SIGUSR2", "SIGCHLD"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    die_with_parent()
    set_title("prefork reload trial")  # what `ps` shows while a slow import is being tried
    # SIGUSR1 asks for the stack: written from C, so a trial stuck in a C call answers too.
    faulthandler.register(signal.SIGUSR1, file=write_fd, all_threads=True, chain=False)
    # The master prints what module code prints; the trial must not print it a second time.
    logging.disable(logging.CRITICAL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the master dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def report_line(write_fd: int, **message: Any) -> None:
    """Write one JSON line to the master (trial child)."""
    data = (json.dumps(message, default=str) + "\n").encode("utf-8")
    while data:
        data = data[os.write(write_fd, data):]


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that parses as a JSON object, if any."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None
