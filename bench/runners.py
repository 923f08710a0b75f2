"""One small class per server under test: its command line, its environment, how many workers answer,
and whether it is expected to keep serving stale code after an edit."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import HOST, Spawned, spawn, wait_http
from bench.refapp import DEFINITION, RefApp

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


@dataclass
class Runner:
    """A server configuration: subclasses say how to start it."""

    name: str                      # short id used in results
    label: str                     # what the table shows
    workers: int = 1               # processes answering requests
    stale: bool = False            # keeps serving old code after an edit, by design
    notes: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    cpus: str = ""                 # taskset's list (e.g. "0"): every process of the server runs there only

    def command(self, app: RefApp, port: int) -> list[str]:
        raise NotImplementedError

    def env(self, app: RefApp) -> dict[str, str]:
        """The environment: ours plus PYTHONPATH on the tree and the vendor layer (when the app has one:
        the real apps run from their folder as a developer would), unbuffered output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        if app.pythonpath:
            env["PYTHONPATH"] = app.pythonpath
        env.update(PYTHONUNBUFFERED="1", **self.extra_env)
        return env

    def start(self, app: RefApp, port: int, logdir: Path) -> Spawned:
        """Spawn the server in its own session (on ``cpus`` when set), cwd in the tree, output to logdir/<name>.log."""
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        return spawn(pin + self.command(app, port), app.tree, self.env(app), logdir / f"{self.name}.log")

    def start_ready(self, app: RefApp, port: int, logdir: Path,
                    timeout: float = 60.0) -> tuple[Spawned, float]:
        """Start the server and wait for the app's ready page (/hello) to answer 200; return it and the
        cold-start seconds."""
        proc = self.start(app, port, logdir)
        done = wait_http(port, app.ready_path, proc.started + timeout, proc)
        if done is None:
            proc.stop()
            raise RuntimeError(f"{self.name} did not become ready; log tail:\n{proc.log_text()[-3000:]}")
        return proc, done - proc.started


@dataclass
class Gunicorn(Runner):
    """gunicorn's sync workers, optionally with --reload (auto engine: inotify when installed) and --preload."""

    reload: bool = True
    preload: bool = False

    def command(self, app: RefApp, port: int) -> list[str]:
        cmd = [str(BIN / "gunicorn"), "-w", str(self.workers), "-b", f"{HOST}:{port}", "--log-level", "warning"]
        if self.reload:
            cmd += ["--reload", "--reload-engine", "auto"]
        if self.preload:
            cmd.append("--preload")
        return cmd + [app.spec]


@dataclass
class Uvicorn(Runner):
    """uvicorn --reload --interface wsgi: one server process restarted by a watchfiles supervisor."""

    def command(self, app: RefApp, port: int) -> list[str]:
        return [str(BIN / "uvicorn"), "--interface", "wsgi", "--reload", "--host", HOST, "--port", str(port),
                "--log-level", "warning", app.spec]


@dataclass
class Hupper(Runner):
    """hupper -m waitress: a monitor process restarting one waitress worker process."""

    def command(self, app: RefApp, port: int) -> list[str]:
        return [str(BIN / "hupper"), "-m", "waitress", f"--listen={HOST}:{port}", "--threads=1", app.spec]


@dataclass
class Werkzeug(Runner):
    """werkzeug.run_simple with its reloader ("stat" or "watchdog")."""

    reloader: str = "stat"

    def command(self, app: RefApp, port: int) -> list[str]:
        return [sys.executable, str(HERE / "peers" / "werkzeug_serve.py"), str(port), self.reloader, app.spec]


@dataclass
class Watchfiles(Runner):
    """watchfiles running waitress-serve as a command, restarted on a change to a .py file."""

    def command(self, app: RefApp, port: int) -> list[str]:
        serve = f"{BIN / 'waitress-serve'} --listen={HOST}:{port} --threads=1 {app.spec}"
        return [str(BIN / "watchfiles"), "--filter", "python", serve, "."]


@dataclass
class Waitress(Runner):
    """A single waitress process with `threads` task threads (no reloader)."""

    threads: int = 4

    def command(self, app: RefApp, port: int) -> list[str]:
        return [str(BIN / "waitress-serve"), f"--listen={HOST}:{port}", f"--threads={self.threads}", app.spec]


@dataclass
class Ours(Runner):
    """ProjectrServer (bench/ours_serve.py): the README's program, on a shared port.

    Both forms log at debug level: the bench reads each reload's plan and each generation's report
    from the log (a handful of lines per reload).
    """

    backend: str = "auto"
    reload: bool = True
    partial: bool = True
    cli: bool = False           # run the `prefork` command line instead of the README's program
    project_file: bool = True   # CLI: --project project.py (False: zero configuration, the app's folder)

    def command(self, app: RefApp, port: int) -> list[str]:
        if self.cli:
            return ([str(BIN / "prefork"), app.spec] + (["--project", DEFINITION] if self.project_file else [])
                    + ["--reload", "-w", str(self.workers), "--bind", f"{HOST}:{port}", "--shared-port",
                       "--log-level", "debug"] + ([] if self.partial else ["--no-partial"]))
        cmd = [sys.executable, str(HERE / "ours_serve.py"), "--project", DEFINITION, "--app", app.spec,
               "--workers", str(self.workers), "--port", str(port), "--backend", self.backend]
        return cmd + ([] if self.reload else ["--no-reload"]) + ([] if self.partial else ["--no-partial"])


def reload_peers() -> list[Runner]:
    """The peers of the reload, cold-start and idle-CPU measurements, as a user would run them."""
    return [
        Gunicorn("gunicorn", "gunicorn --reload -w 2", workers=2),
        Gunicorn("gunicorn-preload", "gunicorn --reload --preload -w 2", workers=2, preload=True, stale=True),
        Uvicorn("uvicorn", "uvicorn --reload --interface wsgi"),
        Hupper("hupper", "hupper -m waitress"),
        Werkzeug("werkzeug-stat", "werkzeug run_simple reloader=stat", reloader="stat"),
        Werkzeug("werkzeug-watchdog", "werkzeug run_simple reloader=watchdog", reloader="watchdog"),
        Watchfiles("watchfiles", "watchfiles 'waitress-serve ...'"),
    ]


def ours_variants() -> list[Ours]:
    """Our server as the CLI runs it, and with partial reloads off (every code change: a fresh generation)."""
    return [Ours("ours-cli", "ours: prefork --project --reload -w 2 (CLI)", workers=2, cli=True),
            Ours("ours-nopartial", "ours: ProjectrServer -w 2, partial=False", workers=2, partial=False)]


def ours(workers: int = 2, backend: str = "auto", reload: bool = True) -> Ours:
    """Our server with `workers` workers and the given watcher backend."""
    suffix = "" if backend == "auto" else f"-{backend}"
    return Ours(f"ours{suffix}", f"ours: ProjectrServer -w {workers}" + ("" if backend == "auto" else f" ({backend})"),
                workers=workers, backend=backend, reload=reload)
