"""ProjectrServer: a prefork Server whose reload() reloads only the changed modules of a projectr Project.

A reload runs in three phases, none of which blocks the master loop:

1. trial: fork a child from the master that runs ``project.load()`` and resolves the app, and
   reports the outcome as JSON lines over a pipe (an io handler of the master). A trial that takes
   longer than ``reload_timeout`` is asked for its stack (faulthandler on SIGUSR1, so even code
   stuck in C answers), then SIGKILLed; the log names the file and line it hung on.
2. load: only when the trial succeeded, ``project.load()`` in the master (transactional), then the
   app is resolved again from its "module:attr" spec.
3. roll: ``roll_workers()`` forks successors from the reloaded master and retires the old ones once
   the successors are ready.

A failure in any phase leaves the old workers serving the old code, logs one block naming the file
and line, and keeps the changes pending in the project, so the next save retries the whole set.
Reload requests that arrive while one is running are coalesced into one more reload afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from projectr import LoadError, Project

from prefork.apps import resolve_app
from prefork.server import Server, notify
from prefork.server.failures import (
    ReloadTimeout,
    alarm,
    describe_exception,
    describe_load_error,
    describe_timeout,
    parse_stack_dump,
    user_frames_of_dump,
)
from prefork.server.trial import Trial, last_json_line, run_trial

log = logging.getLogger("prefork.reload")

_MAX_RETRIALS = 3       # trials restarted because files changed under them, before loading anyway
_DUMP_GRACE = 0.2       # seconds a timed-out trial gets to write its stack before SIGKILL


# ---------------------------------------------------------------------------------------------
# resolving the project (master)


def resolve_project(project: Project | str | os.PathLike[str]) -> Project:
    """Return the Project for a Project, a registered name, or a path to a definition file."""
    if isinstance(project, Project):
        return project
    text = os.fspath(project)
    if text.endswith(".py") or os.sep in text or os.path.isfile(text):
        return Project.from_file(text)
    return Project.find(text)


def describe_loaded(project: Project, paths: list[str]) -> str:
    """``2 modules (a, b)``, plus ``+ 1 resource (templates/x.html)`` when resources changed."""
    # Decided per path (a .py file is a module): the cost follows the reload, not the project size.
    modules = module_names(project, [p for p in paths if p.endswith(".py")])
    resources = module_names(project, [p for p in paths if not p.endswith(".py")])
    text = _counted(len(modules), "module", modules)
    if resources:
        text += " + " + _counted(len(resources), "resource", resources)
    return text


def _counted(count: int, noun: str, names: list[str]) -> str:
    text = f"{count} {noun}{'s' if count != 1 else ''}"
    return text + (f" ({', '.join(names)})" if names else "")


def module_names(project: Project, paths: Iterable[str]) -> list[str]:
    """Module names for loaded source paths (resources keep their path relative to the root)."""
    root = Path(project.root)
    names = []
    for path in paths:
        try:
            rel = Path(path).relative_to(root)
        except ValueError:
            names.append(str(path))
            continue
        if rel.suffix != ".py":
            names.append(str(rel))
            continue
        parts = list(rel.with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


# ---------------------------------------------------------------------------------------------
# the master side


@dataclass
class ReloadRecord:
    """Timings and outcome of one reload, for the one log line (``server.last_reload``)."""

    number: int
    requested: float
    trial_ms: float = 0.0
    load_ms: float = 0.0
    roll_started: float = 0.0
    roll_ms: float = 0.0
    total_ms: float = 0.0   # from the request to the roll's end
    retrials: int = 0
    loaded: list[str] = field(default_factory=list)


class WorkerEnvironment:
    """Worker mixin: tell the app which worker it runs in, through the environment.

    ``PREFORK_WORKER`` (slot index), ``PREFORK_PORT`` and ``PREFORK_GENERATION`` (the reload
    generation the worker was forked in) are set in the worker before it serves, so a page can
    show which code generation answered.
    """

    def on_start(self) -> None:
        """In the worker, before it serves: publish its identity (worker)."""
        os.environ["PREFORK_WORKER"] = str(getattr(self, "index", ""))
        os.environ["PREFORK_PORT"] = str(getattr(self, "port", ""))
        os.environ["PREFORK_GENERATION"] = str(getattr(self, "generation", 0))
        super().on_start()  # type: ignore[misc]


class ProjectrServer(Server):
    """A Server whose reload() reloads the project's changed modules, then rolls the workers.

    ``project`` is a Project, a registered project name, or the path of a definition file;
    ``app`` is ``"module:attr"`` (resolved again after every reload) or a WSGI callable;
    ``reload_timeout`` bounds the seconds a reload's imports may take before it is abandoned;
    ``trial=False`` skips the trial child (the load runs in the master directly: faster by the
    trial's cost, still transactional and interrupted by an alarm after ``reload_timeout``, but a
    bad import's side effects outside the reload set stay in the master). Other keyword arguments
    are Server's.
    """

    def __init__(self, project: Project | str | os.PathLike[str], app: Any,
                 reload_timeout: float = 5.0, trial: bool = True, **kwargs: Any) -> None:
        # First in the MRO: the environment is set before the user's on_start hooks run.
        kwargs["worker_mixins"] = (WorkerEnvironment, *kwargs.get("worker_mixins", ()))
        super().__init__(app=app, **kwargs)
        self.project = resolve_project(project)
        self.reload_timeout = reload_timeout
        self.trial = trial
        self.reload_count = 0
        self.last_reload: ReloadRecord | None = None
        self._trial: Trial | None = None
        self._current: ReloadRecord | None = None
        self._again = False

    # -- resolving the app (master) -----------------------------------------------------------

    def load_app(self) -> Callable[..., Any]:
        """Load the project (what changed since its last load) and resolve the app (master).

        Called by start(); a LoadError here stops the start (nothing serves yet to fall back on).
        """
        self.project.load()
        self.app = self.current_app()
        return self.app

    def current_app(self) -> Callable[..., Any]:
        """Resolve the app spec against the currently loaded modules (master)."""
        return resolve_app(self.app_spec)

    # -- the watcher helper (master) ------------------------------------------------------------

    def watch(self, watcher: Any) -> Any:
        """Reload whenever ``watcher.changed_files()`` reports a change; return the watcher.

        Equivalent to the README idiom
        ``server.add_io_handler(watcher, lambda w: server.reload() if w.changed_files() else None)``.
        """
        self.add_io_handler(watcher, self._on_watcher_readable)
        return watcher

    def _on_watcher_readable(self, watcher: Any) -> None:
        """A watcher's fd is readable: reload when it reports project changes (master)."""
        if watcher.changed_files():
            self.reload()

    def handle_stop(self, graceful: bool = True) -> None:
        """Stop: a trial load still running is killed first, its reload dropped (master)."""
        trial = self._trial
        if trial is not None and self._current is not None:
            log.info("reload #%d abandoned: the server is stopping (trial pid %d killed)",
                     self._current.number, trial.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(trial.pid, signal.SIGKILL)
            self._again = False
        super().handle_stop(graceful)

    # -- the reload state machine (master) ------------------------------------------------------

    @property
    def reloading(self) -> bool:
        """True while a trial, load or roll is in progress."""
        return self._current is not None

    def handle_reload(self) -> None:
        """Start a reload, or note that one more is needed after the running one (master).

        Server coalesces reload requests that arrive during a roll; this coalesces the ones that
        arrive during the trial and the load.
        """
        if self._current is not None:
            self._coalesce(self._current)
            return
        self.reload_count += 1
        self._current = ReloadRecord(number=self.reload_count, requested=time.perf_counter())
        notify("RELOADING=1")
        try:
            self.on_reload()
        except Exception:  # noqa: BLE001 - a failing hook must not stop the reload
            log.exception("hook on_reload failed")
        record = self._current
        self._safely(self._start_trial if self.trial else lambda: self._apply(record))

    def _coalesce(self, record: ReloadRecord) -> None:
        """A reload was asked for while ``record`` runs: supersede its trial, or run once more after.

        A running trial is trying files that have just changed again, so its verdict would be
        stale: it is killed and a fresh trial starts when its pipe closes. This is also what makes
        the save that fixes an endless loop take effect at once, not after ``reload_timeout``.
        """
        trial = self._trial
        if trial is not None and not trial.superseded and record.retrials < _MAX_RETRIALS:
            trial.superseded = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(trial.pid, signal.SIGKILL)
            log.debug("reload #%d: files changed during the trial; starting it again", record.number)
            return
        self._again = True
        log.debug("reload requested while reload #%d runs: one more will follow", record.number)

    def _safely(self, step: Callable[[], Any]) -> None:
        """Run one step of the reload; a bug or an OS error in it fails the reload (master).

        Without this, an unexpected exception would leave the reload marked as running for ever,
        and every later reload request would be coalesced into nothing.
        """
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - logged with its traceback, the master carries on
            log.exception("reload step %s failed", getattr(step, "__name__", step))
            if self._current is not None:
                self._reload_failed({"error": f"{type(exc).__name__}: {exc}", "file": None,
                                     "line": None, "traceback": ""})

    def _start_trial(self) -> None:
        """Fork the trial child and watch its pipe (master)."""
        read_fd, write_fd = os.pipe()
        os.set_inheritable(read_fd, False)
        for stream in (sys.stdout, sys.stderr):  # a fork must not duplicate buffered output
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            try:  # the child must never return into the master's code
                os.close(read_fd)
                self._release_listeners()
                run_trial(self.project, self.app_spec, write_fd)
            finally:
                os._exit(1)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        trial = Trial(pid=pid, fd=read_fd, started=time.perf_counter())
        self._trial = trial
        self.watch_child(pid, lambda status: None)  # the loop's reaper collects it; EOF drives us
        self.add_io_handler(trial, self._on_trial_readable)
        trial.timers.append(self.call_later(self.reload_timeout, lambda: self._trial_overdue(trial)))

    def _release_listeners(self) -> None:
        """Close the trial's copies of the listening sockets (trial child).

        Otherwise a slot removed while a trial runs (TTOU, then TTIN) cannot bind its port again
        until the trial exits: EADDRINUSE, and the master gives the new worker up.
        """
        for slot in self._slots:
            if slot.sock is not None:
                with contextlib.suppress(OSError):
                    slot.sock.close()
        if self._shared_sock is not None:
            with contextlib.suppress(OSError):
                self._shared_sock.close()

    def _on_trial_readable(self, trial: Trial) -> None:
        """Collect the trial's report; on EOF, act on it (master)."""
        try:
            chunk = os.read(trial.fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            trial.buffer += chunk
            # The report is the trial's last word: act on it now, not when the child has finished
            # exiting (tearing down a copy-on-write address space takes milliseconds).
            if chunk.endswith(b"\n") and last_json_line(trial.buffer.decode("utf-8", "replace")):
                self._safely(lambda: self._end_trial(trial))
            return
        self._safely(lambda: self._end_trial(trial))

    def _trial_overdue(self, trial: Trial) -> None:
        """The trial ran past reload_timeout: ask for its stack, then kill it (master)."""
        if trial is not self._trial:
            return
        trial.timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(trial.pid, signal.SIGUSR1)
        trial.timers.append(self.call_later(_DUMP_GRACE, lambda: self._kill_trial(trial)))

    def _kill_trial(self, trial: Trial) -> None:
        """SIGKILL the trial; the pipe's EOF then ends it (master)."""
        if trial is self._trial:
            with contextlib.suppress(ProcessLookupError):
                os.kill(trial.pid, signal.SIGKILL)

    def _end_trial(self, trial: Trial) -> None:
        """The trial's pipe closed: parse its report and go on to the load, or fail (master)."""
        self.remove_io_handler(trial)
        os.close(trial.fd)
        for timer in trial.timers:
            timer.cancel()
        self._trial = None
        record = self._current
        assert record is not None
        record.trial_ms += (time.perf_counter() - trial.started) * 1000.0
        text = trial.buffer.decode("utf-8", "replace")
        report = last_json_line(text)
        if self.state != "running":
            self._current = None  # stopping: handle_stop logged the abandoned reload
        elif trial.superseded:
            self._again = False  # the new trial reads every change made so far
            record.retrials += 1
            self._start_trial()
        elif trial.timed_out and (report is None or not report.get("ok")):
            self._reload_failed(self._hang_report(text))
        elif report is None:
            self._reload_failed({"error": "the trial load died without a report", "file": None,
                                 "line": None, "traceback": text.strip()})
        elif not report.get("ok") and self._again:
            # Files changed while the trial ran: it may have read a half-written save (an editor's
            # truncate-then-write). Not worth a report: the reload that follows decides.
            log.debug("reload #%d: trial failed while files were changing (%s); trying again",
                      record.number, report.get("error"))
            self._finish()
        elif not report.get("ok"):
            self._reload_failed(report)
        elif self._again and record.retrials < _MAX_RETRIALS:
            # Files changed while the trial ran: what it vouched for may be stale, so trial again
            # (this reload absorbs the changes instead of loading untried code in the master).
            self._again = False
            record.retrials += 1
            log.debug("reload #%d: files changed during the trial; trying again", record.number)
            self._start_trial()
        else:
            self._apply(record)

    def _hang_report(self, dump: str) -> dict[str, Any]:
        """Describe a trial killed at reload_timeout: where it was stuck (master)."""
        file, line = parse_stack_dump(dump, self.project.source_files)
        frames = user_frames_of_dump(dump)
        return {
            "file": file,
            "line": line,
            "error": f"hung: the import did not finish within {self.reload_timeout:g} s and was killed",
            "traceback": frames,
        }

    def _apply(self, record: ReloadRecord) -> None:
        """The trial succeeded (or is off): load in the master, resolve the app, roll (master).

        The load runs under an alarm of ``reload_timeout``: without a trial it is what stops an
        import that loops or blocks; after a trial it guards against files that changed since.
        """
        started = time.perf_counter()
        try:
            with alarm(self.reload_timeout):
                record.loaded = self.project.load()
                app = self.current_app()
        except ReloadTimeout as exc:
            self._reload_failed(describe_timeout(exc, self.project))
            return
        except LoadError as exc:
            self._reload_failed(describe_load_error(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bad app must not take the master down
            self._reload_failed(describe_exception(exc, self.project))
            return
        record.load_ms = (time.perf_counter() - started) * 1000.0
        self.app = app
        record.roll_started = time.perf_counter()
        if not self.roll_workers() and self._current is record:
            # Not rolled and no roll_finished call (the server is stopping): end quietly.
            self._current = None

    def roll_finished(self, ok: bool, info: dict[str, Any]) -> None:
        """Server's report that a roll ended: log the reload's one line or its failure (master)."""
        if self._current is None:
            super().roll_finished(ok, info)  # a roll this class did not start
            return
        self._safely(lambda: self._roll_done(self._current, ok, info))

    def _roll_done(self, record: ReloadRecord, ok: bool, info: dict[str, Any]) -> None:
        """End the reload whose roll ended: success line, stop, or failure block (master)."""
        if ok:
            self._log_success(record, info)
            self._finish()
        elif self.state != "running":
            log.info("reload #%d abandoned: the server is stopping", record.number)
            self._current = None
        else:
            self._reload_failed({"error": f"the new workers did not start: {info.get('reason')}",
                                 "file": None, "line": None, "traceback": ""})

    def _log_success(self, record: ReloadRecord, info: dict[str, Any]) -> None:
        """Log the one line a reload is summed up in (master)."""
        what = describe_loaded(self.project, record.loaded)
        replaced = int(info.get("replaced", len(self.workers)))
        roll_ms = float(info.get("elapsed", 0.0)) * 1000.0
        if not self.trial:
            trials = "no trial"
        else:
            trials = f"{record.retrials + 1} trials" if record.retrials else "trial"
            trials += f" {record.trial_ms:.1f} ms"
        log.info("reload #%d: %s in %.1f ms; %d worker%s replaced in %.0f ms (%s; generation %d)",
                 record.number, what, record.load_ms, replaced, "s" if replaced != 1 else "",
                 roll_ms, trials, info.get("generation", self.generation))
        record.roll_ms = roll_ms
        record.total_ms = (time.perf_counter() - record.requested) * 1000.0
        self.last_reload = record

    def _reload_failed(self, report: dict[str, Any]) -> None:
        """Log one readable block for a failed reload; the old workers keep serving (master)."""
        record = self._current
        number = record.number if record else self.reload_count
        where = report.get("file") or "?"
        if report.get("line"):
            where = f"{where}:{report['line']}"
        lines = [f"reload #{number} failed: {where}: {report.get('error')}"]
        lines += ["  " + ln for ln in (report.get("traceback") or "").rstrip().splitlines()]
        lines.append(f"  still serving generation {self.generation}; "
                     "the changes stay pending: save a fix to retry them all")
        log.error("\n".join(lines))
        notify("READY=1")
        self._finish()

    def _finish(self) -> None:
        """Leave the reloading state; queue the coalesced reload if one was asked for (master)."""
        self._current = None
        if self._again:
            self._again = False
            # Server posts one reload itself when requests came during its roll: do not add a second.
            if not getattr(self, "_reload_again", False):
                self.post_event("reload")
