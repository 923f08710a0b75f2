"""Keep an nginx ``upstream`` block equal to the live worker ports (a master-side hook helper).

::

    up = NginxUpstream("/etc/nginx/prefork-upstream.conf", name="myapp",
                       reload_command=["nginx", "-s", "reload"])
    server = Server(app, workers=3, port=8000,
                    worker_ready=up.worker_ready, worker_exited=up.worker_exited)

Each hook runs in the master. It computes the set of ports of the ready workers and, only when that
set changed, rewrites the file atomically (temporary file + ``os.replace``, so nginx never reads half
a file) and runs the reload command. A rolling reload keeps every port, so it rewrites nothing.

The reload command never blocks the master: it is started as a child process that the master's loop
watches (``Server.watch_child``) and kills after ``reload_timeout``. At most one runs at a time; a
change while it runs queues exactly one more run, which reads the file as it is by then.

An empty upstream block is rejected by nginx, so the file never gets one: when no worker is ready
(shutdown, ``workers 0``, every worker crashed) the last non-empty list is kept. The master keeps its
listening sockets through all of these, so a connection nginx sends there waits in the backlog for the
next worker instead of being refused. Only when there has never been a worker is a placeholder written
(``server 127.0.0.1:9 down;``), so that an nginx configuration including the file still loads.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger("prefork.upstream")

DEFAULT_RELOAD_COMMAND = ("nginx", "-s", "reload")
# nginx's default (max_fails=1, fail_timeout=10s) takes a port out for 10 s after one error: a
# keep-alive connection closed under it during a rolling reload would do that to every port in turn
# and leave "no live upstreams" (502s). The master keeps every socket bound, so a port never needs it.
DEFAULT_SERVER_OPTIONS = "max_fails=0"
PLACEHOLDER_PORT = 9  # "discard": never listened on, and marked down anyway
_SERVER_LINE = re.compile(r"^\s*server\s+\S+?:(\d+)\b(?!.*\bdown\b)", re.MULTILINE)


def render(
    ports: Iterable[int],
    name: str | None = "prefork",
    *,
    host: str = "127.0.0.1",
    keepalive: int | None = None,
    server_options: str = "",
) -> str:
    """Return the file's text for ``ports``: an ``upstream NAME {...}`` block, or with ``name=None``
    only the ``server`` lines (to ``include`` inside an upstream block of your own)."""
    options = f" {server_options.strip()}" if server_options.strip() else ""
    ports = sorted(set(ports))
    lines = [f"server {host}:{port}{options};" for port in ports]
    if not lines:
        lines = [f"server 127.0.0.1:{PLACEHOLDER_PORT} down;  # no worker has been ready yet"]
    header = "# Written by prefork.upstream: rewritten whenever the set of live worker ports changes.\n"
    if name is None:
        return header + "".join(f"{line}\n" for line in lines)
    if keepalive:
        lines.append(f"keepalive {keepalive};")
    body = "".join(f"    {line}\n" for line in lines)
    return f"{header}upstream {name} {{\n{body}}}\n"


def ports_in(text: str) -> set[int]:
    """The ports of the live ``server`` lines in a file written by :func:`render`."""
    return {int(port) for port in _SERVER_LINE.findall(text)}


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".prefork-upstream-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # nginx's workers may run as another user and must read it
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


@dataclass
class _ReloadRun:
    """One run of the reload command, watched by the master loop."""

    proc: subprocess.Popen[bytes]
    output: IO[bytes]  # its stdout and stderr, for the log line when it fails
    timer: Any = None  # kills it after reload_timeout
    killed: bool = False


class NginxUpstream:
    """Write the live worker ports to an nginx upstream file and reload nginx when they change.

    ``keepalive`` idle connections per nginx worker are kept open to the workers (None: none); it
    needs ``proxy_http_version 1.1`` and an empty ``Connection`` header in the ``location``, as in
    examples/nginx/nginx.conf. ``reload_command`` is an argv list, a shell-like string (split with
    :func:`shlex.split`), or None to only write the file. In a master (the hooks, or ``sync`` after
    ``attach``) it runs as a child process the loop watches, never waited for: one at a time, one more
    queued while it runs, killed after ``reload_timeout`` seconds. Outside a master (``sync`` called
    from a script) it is waited for, up to ``reload_timeout``. A failure is logged at WARNING and never
    raised into the master.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = "prefork",
        *,
        host: str = "127.0.0.1",
        reload_command: Sequence[str] | str | None = DEFAULT_RELOAD_COMMAND,
        keepalive: int | None = 16,
        server_options: str = DEFAULT_SERVER_OPTIONS,
        reload_timeout: float = 10.0,
    ) -> None:
        self.path = os.fspath(path)
        self.name = name
        self.host = host
        if isinstance(reload_command, str):
            reload_command = shlex.split(reload_command)
        self.reload_command = list(reload_command) if reload_command else None
        self.keepalive = keepalive
        self.server_options = server_options
        self.reload_timeout = reload_timeout
        self.server: Any = None
        self.ports: frozenset[int] = frozenset(self._ports_on_disk())
        self.reloads = 0  # how many times the reload command was started (successfully or not)
        self._running: _ReloadRun | None = None  # the command running now (in a master)
        self._queued = False  # run it once more when the running one exits

    def _ports_on_disk(self) -> set[int]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return ports_in(handle.read())
        except OSError:
            return set()

    def attach(self, server: Any) -> NginxUpstream:
        """Remember the server whose workers the hooks look at (when workers have no ``.server``)."""
        self.server = server
        return self

    # --- the hooks (run in the master) ---

    def hooks(self) -> dict[str, Any]:
        """``{"worker_ready": ..., "worker_exited": ...}``, to pass as ``Server(**up.hooks())``."""
        return {"worker_ready": self.worker_ready, "worker_exited": self.worker_exited}

    def worker_ready(self, worker: Any) -> None:
        """Hook: ``worker`` accepts connections; add its port if it is new."""
        self.sync(self._live_ports(worker, exclude=None) | {worker.port}, server=self._server_of(worker))

    def worker_exited(self, worker: Any, status: Any = None) -> None:
        """Hook: ``worker`` exited; drop its port if no ready worker serves it any more.

        A worker that died unexpectedly keeps its port: the master replaces it at once on the same
        socket, and connections wait in the backlog meanwhile, so reloading nginx twice would only
        cost work. A shutdown of the whole server leaves the file as it is.
        """
        server = self._server_of(worker)
        if getattr(server, "state", "running") == "stopping" or not getattr(worker, "stopping", True):
            return
        self.sync(self._live_ports(worker, exclude=worker), server=server)

    def _server_of(self, worker: Any) -> Any:
        server = getattr(worker, "server", None) or self.server
        if server is None:
            raise RuntimeError("NginxUpstream needs the server: call up.attach(server)")
        return server

    def _live_ports(self, worker: Any, exclude: Any) -> set[int]:
        server = self._server_of(worker)
        # all_workers (prefork.Server) also lists a roll's successors; plain .workers otherwise.
        workers = getattr(server, "all_workers", None) or server.workers
        return {
            w.port
            for w in workers
            if w is not exclude
            and getattr(w, "ready", True)
            and getattr(w, "pid", None)
            and not getattr(w, "stopping", False)
        }

    # --- the work ---

    def sync(self, ports: Iterable[int], *, server: Any = None) -> bool:
        """Make the file list ``ports``; return True when it was rewritten (and nginx reloaded).

        An empty ``ports`` keeps the last non-empty list (see the module docstring). ``server``
        (default: the attached one) is the master whose loop runs the reload command.
        """
        wanted = frozenset(int(p) for p in ports)
        if not wanted:
            if os.path.exists(self.path):
                return False
            log.info("upstream %s: no worker ready yet, writing a placeholder to %s", self.name, self.path)
        elif wanted == self.ports and os.path.exists(self.path):
            return False
        text = render(wanted, self.name, host=self.host, keepalive=self.keepalive, server_options=self.server_options)
        write_atomically(self.path, text)
        log.debug("upstream %s: wrote ports %s to %s", self.name, sorted(wanted) or "(none)", self.path)
        self.ports = wanted
        self.run_reload(server)
        return True

    def run_reload(self, server: Any = None) -> bool:
        """Run the reload command, if any.

        In a master (``server``, or the attached one, has ``watch_child``): start it as a watched
        child process, or queue one more run if it is running already; return True (started or
        queued). Elsewhere: run it and wait up to ``reload_timeout``; return True when it exited 0.
        """
        if not self.reload_command:
            return False
        loop = server if server is not None else self.server
        if loop is None or not callable(getattr(loop, "watch_child", None)):
            return self._run_and_wait()
        if self._running is not None:
            self._queued = True  # coalesced: however many changes, one more run reads the latest file
            return True
        self._start(loop)
        return True

    # --- the command as a child of the master (never waited for) ---

    def _start(self, loop: Any) -> None:
        """Start the command; the loop reports its exit to ``_finished`` (master)."""
        command = self.reload_command
        if command is None:
            return
        self.reloads += 1
        output = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        except OSError as exc:  # not found, not executable: nothing runs, nothing to watch
            output.close()
            log.warning("upstream reload command %s failed: %s", shlex.join(command), exc)
            return
        run = _ReloadRun(proc, output)
        self._running = run
        # The master reaps every child with waitpid(-1): the exit comes back through the loop.
        loop.watch_child(proc.pid, lambda status: self._finished(loop, run, status))
        call_later = getattr(loop, "call_later", None)
        if call_later is not None:
            run.timer = call_later(self.reload_timeout, lambda: self._overdue(run))
        log.debug("upstream reload command %s started (pid %d)", shlex.join(command), proc.pid)

    def _overdue(self, run: _ReloadRun) -> None:
        """The command outlived ``reload_timeout``: kill it (it is not reaped yet, so the pid is its)."""
        if self._running is run:
            run.killed = True
            try:
                os.kill(run.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _finished(self, loop: Any, run: _ReloadRun, status: int) -> None:
        """The loop reaped the command: log a failure, then start the queued run if any (master)."""
        run.proc.returncode = status  # reaped by the master: Popen must never wait for this pid again
        if run.timer is not None:
            run.timer.cancel()
        if self._running is run:
            self._running = None
        command = shlex.join(self.reload_command or [])
        if run.killed:
            log.warning("upstream reload command %s did not finish within %g s; killed", command, self.reload_timeout)
        elif status != 0:
            log.warning("upstream reload command %s exited %d: %s", command, status, _tail(run.output))
        run.output.close()
        if self._queued and self.reload_command:
            self._queued = False
            self._start(loop)

    # --- outside a master: run and wait ---

    def _run_and_wait(self) -> bool:
        """Run the command and wait for it (no master loop to watch it); True when it exited 0."""
        assert self.reload_command
        self.reloads += 1
        try:
            done = subprocess.run(
                self.reload_command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.reload_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("upstream reload command %s failed: %s", shlex.join(self.reload_command), exc)
            return False
        if done.returncode != 0:
            log.warning(
                "upstream reload command %s exited %d: %s",
                shlex.join(self.reload_command),
                done.returncode,
                (done.stderr or done.stdout).strip()[-500:],
            )
            return False
        return True


def _tail(output: IO[bytes], limit: int = 500) -> str:
    """The last ``limit`` bytes a command wrote, stripped, as text."""
    try:
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - limit))
        return output.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


Upstream = NginxUpstream  # the short name prefork.cli uses
