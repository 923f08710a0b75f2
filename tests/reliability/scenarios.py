"""The reliability scenarios, parameterised by size: pytest runs them small, bench/soak.py long.

Each scenario function starts real processes through a ``Launcher`` (own session, killed by
process group at close), drives them with real signals, sockets and file edits, counts what the
clients saw, and returns a ``Result`` whose ``problems`` list says what went wrong (empty: pass).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.reliability.harness import (
    EXAMPLES, PYTHON, Launcher, Load, Result, Running, ctl, monotonic_per_port, timed_ctl, wait_for)

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

    def start(self, launcher: Launcher, workers: int = 4, extra: list[str] = ()) -> Running:
        pid_file = launcher.tmp_path / "server.pid"

        def command(port: int) -> list[str]:
            return [PYTHON, str(SERVE), str(self.project_file), "--port", str(port), "--workers", str(workers),
                    "--pid", str(pid_file), *extra]

        return launcher.start_http(command, workers, cwd=self.root, pid_file=pid_file, path=APP_PATH)


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
    result.requests = load.count
    result.failures = len(load.failures)
    result.extra["keep-alive retries"] = load.retries
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
    result.requests = load.count
    result.failures = len(load.failures)
    result.extra["failed reloads logged"] = failures_logged
    result.extra["responses from the bad code"] = wrong_code
    result.extra["worst ctl/signal answer"] = f"{probe.worst * 1000:.0f} ms"
    result.extra["keep-alive retries"] = load.retries
    result.check(result.failures == 0, f"{result.failures} failed requests: {[r.error for r in load.failures[:5]]}")
    result.check(probe.worst < 1.0, f"the master took {probe.worst:.2f} s to answer")
    result.check(server.proc.poll() is None, "the master exited")
    return result
