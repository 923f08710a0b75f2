"""Server: the prefork master (runs in the master process only).

One thread, one ``selectors`` loop. Each turn: reap dead children -> dispatch queued events
(``handle_<name>``) -> run due timers (kills of overdue workers, pings, backoff) -> keep the slot
count -> wait until the next deadline or until a signal, a worker message or an io handler's fd
wakes the loop. Signal handlers and the public ``stop()``/``reload()``/``set_workers()`` only
enqueue; the loop does the work. A bug in one turn is logged with its traceback and the loop goes on.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prefork import signals, stdio
from prefork.apps import resolve_app
from prefork.asgi import check_interface, require_runtime
from prefork.notify import notify
from prefork.pidfile import PidFile, PidFileError
from prefork.proctitle import set_title
from prefork.server.channels import WorkerChannels
from prefork.server.processes import Processes
from prefork.server.rolling import Roll, Rolling
from prefork.server.slots import SlotTable
from prefork.server.timers import TimerHandle, TimerQueue
from prefork.sockets import Address, parse_address
from prefork.worker import Worker

log = logging.getLogger("prefork")

App = Callable[..., Any]

# Hook keyword -> the positional arguments it receives (checked when the Server is created).
HOOK_ARGUMENTS = {
    "worker_ready": ("worker",),
    "worker_exited": ("worker", "status"),
    "when_ready": ("server",),
    "on_reload": ("server",),
}


class Server(Processes, Rolling, WorkerChannels):
    """The prefork master. See ``docs/prefork.md`` for the full API, hooks and signals.

    The workers' lives (reaping, slots, forking, retiring) live in ``prefork.server.processes``, its
    rolls in ``prefork.server.rolling`` and its side of the worker channels (broadcast, messages,
    pings) in ``prefork.server.channels``; all three are mixed in here. This module keeps the loop,
    the public API, events, hooks, setup and teardown.
    """

    worker_class: type[Worker] = Worker  # the class every worker object is made from (plus the mixins)
    ready_timeout = 30.0  # seconds a roll waits for all successors to report ready
    # threads=1: serve requests on the worker's I/O loop thread. A request then costs no hand-off
    # between waitress's I/O and task threads (measured: 1.4 instead of 2.4 ms of CPU for a 1.4 ms
    # CPU-bound response); commands are answered between requests. False: waitress's task thread.
    inline_requests = True
    term_timeout = 5.0  # seconds between SIGTERM (stop now) and SIGKILL

    def __init__(
        self,
        app: App | str,
        workers: int = 3,
        host: str = "0.0.0.0",
        port: int = 8000,
        stderr: Any = None,
        pid_file: str | None = None,
        worker_mixins: Iterable[type] = (),
        slow_start: float = 0.0,
        threads: int = 1,
        shared_port: bool = False,
        graceful_timeout: float = 30.0,
        timeout: float | None = None,
        backlog: int = 2048,
        interface: str = "auto",
        worker_ready: Callable[[Worker], Any] | None = None,
        worker_exited: Callable[[Worker, int], Any] | None = None,
        when_ready: Callable[[Server], Any] | None = None,
        on_reload: Callable[[Server], Any] | None = None,
        bind: str | Sequence[str] | None = None,
        access_log: Any = None,
    ) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        # bind="HOST:PORT" or "unix:PATH" (gunicorn's spelling), or several, replaces host and port.
        binds = [bind] if isinstance(bind, str) else list(bind or ())
        addresses = [parse_address(text) for text in binds] or [Address(host, port)]
        self.address = addresses[0]  # the slots' own: a port per worker, or one shared port
        self.more_addresses = addresses[1:]  # every worker accepts on these too
        self.app_spec = app
        self.app: App | None = None if isinstance(app, str) else app
        # "asgi", "wsgi", or "auto": detected from the app in whichever process has it (prefork.asgi).
        self.interface = check_interface(interface)
        self.num_workers = workers
        self.host = self.address.host
        self.port = self.address.port
        self.stderr = stderr
        self.pid_file = None if pid_file is None else os.fspath(pid_file)
        mixins = tuple(worker_mixins)
        base = type(self).worker_class  # a subclass may name its own Worker subclass
        self.worker_class: type[Worker] = type(base.__name__, (*mixins, base), {}) if mixins else base
        self.slow_start = slow_start
        self.threads = threads
        self.shared_port = shared_port or self.address.path is not None  # a Unix socket is one for all
        self.access_log = access_log  # a path or a stream: each worker writes the requests it served
        self.graceful_timeout = graceful_timeout
        self.timeout = timeout
        self.backlog = backlog
        self._hook_functions = _checked_hooks(
            worker_ready=worker_ready, worker_exited=worker_exited, when_ready=when_ready, on_reload=on_reload
        )
        self.generation = 0
        # The generation whose code the workers serve: a roll onto the same code keeps it (pages
        # with live reload reload when it changes).
        self.code_generation = 0
        self.state = "new"  # new -> running -> stopping -> stopped
        self._timers = TimerQueue()
        self._slots = SlotTable(self._timers.clock)
        self._events: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._io_handlers: dict[int, tuple[Any, Callable[[Any], Any]]] = {}
        self._by_pid: dict[int, Worker] = {}
        self._child_watchers: dict[int, Callable[[int], Any]] = {}
        self._request_ids = itertools.count(1)
        self._selector: selectors.BaseSelector | None = None
        self._pipe: signals.WakeupPipe | None = None
        self._router: signals.SignalRouter | None = None
        self._pidfile: PidFile | None = None
        self._ctl: Any = None
        self._roll: Roll | None = None
        self._roll_again = False
        self._reload_again = False
        self._reload_again_full = False  # the coalesced reload is a full one (USR2 during a roll)
        self._deferred_target: int | None = None
        self._serving_app: App | None = None
        self._announced = False
        self._graceful_stop = True
        self._shared_sock: socket.socket | None = None
        self._more_socks: list[socket.socket] = []  # bound for more_addresses, shared by every worker
        self._unix_paths: list[str] = []  # the Unix sockets this master made (removed at exit)
        self._output_fd: int | None = None
        self._output_path: str | None = None
        self._access_fd: int | None = None
        self._access_path: str | None = None
        self._master_pid = os.getpid()
        self.stopped_cleanly = True  # False once a stop had to SIGKILL a worker (the CLI then exits 1)
        # Workers forked by a generation process (ProjectrServer) instead of by the master itself:
        self._spawn_from: Any = None
        self._pending_forks: dict[int, Worker] = {}  # request id -> worker whose pid is not known yet
        self._stranger_exits: dict[int, int] = {}  # reaped pids no worker claimed (yet)

    # -- public API (master) -----------------------------------------------------------------------

    @property
    def workers(self) -> list[Worker]:
        """The current worker of every slot (booting or serving), by index.

        During a roll these are the predecessors; successors appear once the roll completes.
        ``all_workers`` also lists successors and workers that are stopping.
        """
        return [slot.current for slot in self._slots.active() if slot.current is not None]

    @property
    def all_workers(self) -> list[Worker]:
        """Every live worker process the master knows, by (index, generation)."""
        return sorted(self._by_pid.values(), key=lambda w: (w.index, w.generation, w.pid or 0))

    @property
    def rolling(self) -> bool:
        """True while a rolling replacement is in progress."""
        return self._roll is not None

    def add_io_handler(self, io: Any, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(io)`` from the master loop whenever ``io`` (anything with fileno()) is readable."""
        fd = io.fileno()
        self._io_handlers[fd] = (io, callback)
        if self._selector is not None:
            self._selector.register(fd, selectors.EVENT_READ, lambda: self._run_io_handler(io, callback))

    def remove_io_handler(self, io: Any) -> None:
        """Stop watching ``io``; unknown objects are ignored."""
        fd = io if isinstance(io, int) else io.fileno()
        if self._io_handlers.pop(fd, None) is not None and self._selector is not None:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass

    def post_event(self, name: str, *args: Any) -> None:
        """Queue event ``name``: the loop calls ``handle_<name>(*args)``. Safe from signal handlers."""
        self._events.append((name, args))
        if self._pipe is not None:
            self._pipe.wake()

    def stop(self, graceful: bool = True) -> None:
        """Ask the master to stop: drain workers first (graceful) or terminate them now."""
        self.post_event("stop", graceful)

    def reload(self) -> None:
        """Ask the master to reload: ``handle_reload()`` (a rolling replacement of every worker)."""
        self.post_event("reload")

    def set_workers(self, count: int) -> None:
        """Ask the master to run ``count`` workers."""
        self.post_event("set_workers", int(count))

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback()`` in the master loop after ``delay`` seconds; ``.cancel()`` the handle to drop it."""
        return self._timers.call_later(delay, callback)

    def watch_child(self, pid: int, callback: Callable[[int], Any]) -> None:
        """Have the loop call ``callback(status)`` when child ``pid`` (not a worker) exits.

        The master reaps every child with ``waitpid(-1)``; a subclass that forks helpers of its own
        must register them here instead of waiting for them. ``status`` is an exit code or -signal.
        """
        self._child_watchers[pid] = callback

    def start(self, install_signals: bool = True) -> None:
        """Bind, write the pid file, fork the workers and run the loop until stopped (master).

        Raises (before forking anything) when the app cannot be loaded, a port cannot be bound or
        the pid file names a live process. Must run in the main thread to handle signals.
        """
        if self.state != "new":
            raise RuntimeError(f"Server.start() called on a server in state {self.state!r}")
        self.load_app()
        self._serving_app = self.app
        import prefork.child  # noqa: F401  import waitress once in the master: forks inherit it

        if self.app is not None:  # an ASGI app: uvicorn too (or the error that it is missing, before any fork)
            require_runtime(self.app, self.interface)
        try:
            self._output_fd, self._output_path = stdio.open_stream(self.stderr)
            self._access_fd, self._access_path = stdio.open_access_log(self.access_log)
            self._bind_initial()
            if self.pid_file:
                self._pidfile = PidFile(self.pid_file)
                try:
                    self._pidfile.create()
                except OSError as exc:
                    raise PidFileError(f"cannot write the pid file {self.pid_file}: {exc.strerror or exc}") from exc
            self._open_loop(install_signals)
            self._prepare_app()
            self.state = "running"
            self._open_ctl()
            set_title("prefork master")
            self._log_listening()
            self._run()
        finally:
            self._cleanup()

    # -- extension points ---------------------------------------------------------------------------

    def load_app(self) -> App:
        """Resolve ``app_spec`` (a callable, or ``"module:attr"``) into ``self.app``; return it (master).

        Called by ``start()`` and by the default ``handle_reload()``. A string is looked up in the
        modules already imported: this does not re-import code (ProjectrServer reloads it first).
        """
        spec = self.app_spec
        app = resolve_app(spec) if isinstance(spec, str) else spec
        if not callable(app):
            raise TypeError(f"app {spec!r} is not a WSGI or ASGI callable")
        self.app = app
        return app

    def _prepare_app(self) -> None:
        """Called by start() once the loop exists, before any worker is forked (master).

        ProjectrServer forks its base and generation 0 here; a plain Server has its app already.
        """

    def handle_reload_full(self) -> None:
        """USR2, ``prefork ctl reload --full``: a plain Server has nothing more to renew than a reload."""
        self.handle_reload()

    def handle_reload(self) -> None:
        """Default reload: the ``on_reload`` hook, ``load_app()``, then ``roll_workers()`` (master).

        Never called while a roll is in progress: reload requests arriving then are coalesced
        into one more ``handle_reload()`` after the roll.
        """
        log.info("reload requested (generation %d)", self.generation)
        notify("RELOADING=1")
        self._call_hook("on_reload")
        try:
            self.load_app()
        except Exception:
            log.exception(
                "reload: cannot load app %r; the workers keep serving generation %d", self.app_spec, self.generation
            )
            notify("READY=1")
            return
        self.roll_workers()

    # -- hooks (override, or pass as keyword callables) ---------------------------------------------

    def worker_ready(self, worker: Worker) -> None:
        """Master: ``worker`` accepts connections (its port is ``worker.port``)."""
        self._call_function("worker_ready", worker)

    def worker_exited(self, worker: Worker, status: int) -> None:
        """Master: ``worker`` exited with ``status`` (exit code, or -signal)."""
        self._call_function("worker_exited", worker, status)

    def when_ready(self) -> None:
        """Master: every slot has a ready worker for the first time since start()."""
        self._call_function("when_ready", self)

    def on_reload(self) -> None:
        """Master: a reload starts (before the app is reloaded and workers are replaced)."""
        self._call_function("on_reload", self)

    # -- event handlers (the loop calls handle_<event>) ---------------------------------------------

    def handle_stop(self, graceful: bool = True) -> None:
        """Stop every worker (drain first when ``graceful``); the loop ends when none is left."""
        if self.state == "stopping":
            if not graceful and self._graceful_stop:
                log.info("stop now requested during a graceful stop: terminating workers")
                self._graceful_stop = False
                for worker in list(self._by_pid.values()):
                    self._terminate(worker)
            else:  # a second QUIT (or a stop request during a stop now): the deadlines already set hold
                log.info(
                    "%s stop already in progress (%d workers left)",
                    "graceful" if self._graceful_stop else "immediate",
                    len(self._by_pid),
                )
            return
        self.state = "stopping"
        self._graceful_stop = graceful
        notify("STOPPING=1")
        count = len(self._by_pid)
        log.info("stopping %s (%d worker%s)", "gracefully" if graceful else "now", count, "" if count == 1 else "s")
        if self._roll is not None:
            self._abandon_roll("the server is stopping")
        for worker in self._pending_forks.values():
            worker.stopping = True  # stopped as soon as its generation tells us its pid
        for worker in list(self._by_pid.values()):
            if graceful:
                self._retire(worker)
            else:
                self._terminate(worker)

    def handle_set_workers(self, count: int) -> None:
        """Grow or shrink to ``count`` slots (deferred until a roll in progress ends)."""
        if self._roll is not None:
            self._deferred_target = count
            return
        count = max(0, count)
        if count != self._slots.target:
            log.info("workers: %d -> %d", self._slots.target, count)
        self._slots.target = count

    def handle_add_workers(self, delta: int) -> None:
        """TTIN/TTOU: one worker more or less (never fewer than one)."""
        base = self._deferred_target if self._deferred_target is not None else self._slots.target
        if base + delta < 1 <= base:
            log.info("TTOU: already at one worker (never fewer); nothing changes")
        self.handle_set_workers(max(1, base + delta))

    def handle_reopen_logs(self) -> None:
        """USR1: reopen the master's log files and tell every worker to reopen theirs."""
        if self._output_path is not None:
            self._output_fd = stdio.reopen_path(self._output_path, self._output_fd)
        count = stdio.reopen_log_handlers()
        log.info("reopened log files (%d logging handlers)", count)
        for worker in self.workers:
            worker.send_control_message("reopen_logs")

    def handle_worker_ready(self, worker: Worker) -> None:
        """A worker reported that it accepts connections."""
        if worker.pid not in self._by_pid or worker.ready:
            return
        worker.ready = True
        worker.ready_at = time.time()
        boot_ms = (worker.ready_at - (worker.started_at or worker.ready_at)) * 1000
        log.debug("%s ready (generation %d, %.0f ms)", worker.describe(), worker.generation, boot_ms)
        slot = self._slots.slots.get(worker.index)
        if worker.stopping or slot is None:
            return
        if slot.current is worker:
            self._slots.ready(slot)
        self._call_hook("worker_ready", worker)
        if self.timeout:
            self._schedule_ping(worker)
        if slot.successor is worker:
            self._check_roll()
        else:
            self._maybe_announce()

    # -- the loop -------------------------------------------------------------------------------------

    def _run(self) -> None:
        """Turn the loop until stopped and every worker has been reaped."""
        while not (self.state == "stopping" and not self._by_pid and not self._pending_forks):
            self._turn()

    def _turn(self) -> None:
        """One turn: signals, reap, dispatch, timers, slots, wait. Each step's bug is logged, never fatal."""
        self._guarded(self._take_signals, "taking signals")
        self._guarded(self._reap, "reaping")
        self._guarded(self._dispatch_events, "dispatching events")
        for timer in self._timers.pop_due():
            self._guarded(timer.callback, "timer")
        self._guarded(self._keep_slots, "keeping the slot count")
        if self.state == "stopping" and not self._by_pid and not self._pending_forks:
            return
        try:
            self._wait()
        except Exception:
            log.exception("master: waiting failed")
            time.sleep(0.1)  # only on this bug path: do not spin while the error repeats

    def _wait(self) -> None:
        """Block until an fd is readable or the next deadline passes, then run the fd callbacks."""
        assert self._selector is not None
        timeout: float | None = None
        if self._events or (self._router and self._router.received):
            timeout = 0.0
        else:
            deadlines = [
                d
                for d in (
                    self._timers.next_deadline(),
                    self._slots.next_deadline() if self.state == "running" else None,
                )
                if d is not None
            ]
            if deadlines:
                timeout = max(0.0, min(deadlines) - self._timers.clock())
        ready = self._selector.select(timeout)
        self._guarded(self._take_signals, "taking signals")  # a stop first: a channel's EOF may be part of it
        for key, _ in ready:
            self._guarded(key.data, "fd callback")

    def _take_signals(self) -> None:
        """Turn recorded signals into events; a stop is handled at once, before any child is reaped.

        systemd (KillMode=control-group) and ``kill -TERM -PGID`` send the same SIGTERM to every
        process of the server: the workers and generations that exit with it are part of the stop,
        not deaths to repair (no replacement, no fresh generation, no warning).
        """
        while self._router is not None and self._router.received:
            signum = self._router.received.popleft()
            event = signals.SIGNAL_EVENTS.get(signum)
            if event is not None:
                log.info("received %s", signal.Signals(signum).name)
                if event[0] == "stop":
                    self._dispatch(event[0], tuple(event[1:]))
                else:
                    self._events.append((event[0], tuple(event[1:])))

    def _dispatch_events(self) -> None:
        """Run ``handle_<name>`` for each queued event (signals were taken at the turn's start)."""
        while self._events:
            name, args = self._events.popleft()
            self._dispatch(name, args)

    def _dispatch(self, name: str, args: tuple[Any, ...]) -> None:
        """Run one event's handler; coalesce reloads during a roll; ignore changes while stopping."""
        if self.state == "stopping" and name in (
            "reload",
            "reload_full",
            "changed",
            "roll",
            "set_workers",
            "add_workers",
        ):
            log.info("%s ignored: the server is stopping", name)
            return
        if name in ("reload", "reload_full") and self._roll is not None:
            log.info("reload requested during a roll: one more reload will follow it")
            self._reload_again = True
            self._reload_again_full = self._reload_again_full or name == "reload_full"
            return
        handler = getattr(self, f"handle_{name}", None)
        if handler is None:
            log.warning("no handler for event %r", name)
            return
        self._guarded(lambda: handler(*args), f"event {name}")

    def _guarded(self, function: Callable[[], Any], what: str) -> None:
        """Run ``function``; log (never raise) what it raises."""
        try:
            function()
        except Exception:
            log.exception("master: %s failed", what)

    # -- hooks ----------------------------------------------------------------------------------------

    def _call_function(self, name: str, *args: Any) -> None:
        """Call the keyword hook ``name`` if one was given."""
        function = self._hook_functions.get(name)
        if function is not None:
            function(*args)

    def _call_hook(self, name: str, *args: Any) -> None:
        """Run the master hook method ``name``; log (with its name) what it raises."""
        try:
            getattr(self, name)(*args)
        except Exception:
            log.exception("hook %s failed", name)

    def _call_worker_hook(self, worker: Worker, name: str) -> None:
        """Run ``worker.<name>()`` in the master; log what it raises."""
        try:
            getattr(worker, name)()
        except Exception:
            log.exception("hook %s failed for worker %d", name, worker.index)

    # -- setup and teardown --------------------------------------------------------------------------

    def _open_loop(self, install_signals: bool) -> None:
        """Create the selector and the wakeup pipe; install signal handlers; register io handlers."""
        self._selector = selectors.DefaultSelector()
        self._pipe = signals.WakeupPipe()
        self._selector.register(self._pipe, selectors.EVENT_READ, self._pipe.drain)
        self._router = signals.SignalRouter(self._pipe)
        self._router.install(list(signals.SIGNAL_EVENTS) if install_signals else [], wake_on=[signal.SIGCHLD])
        for fd, (io, callback) in self._io_handlers.items():
            self._selector.register(
                fd, selectors.EVENT_READ, lambda io=io, callback=callback: self._run_io_handler(io, callback)
            )

    def _run_io_handler(self, io: Any, callback: Callable[[Any], Any]) -> None:
        """Call an io handler; log what it raises."""
        try:
            callback(io)
        except Exception:
            log.exception("io handler %r for %r failed", callback, io)

    def _open_ctl(self) -> None:
        """Open the operator control socket next to the pid file (prefork.ctl)."""
        if not self.pid_file:
            return
        try:
            from prefork.ctl import ControlServer
        except ImportError:  # the ctl module is optional for the master loop itself
            log.debug("prefork.ctl not available: no control socket")
            return
        self._ctl = ControlServer(self, path=self.pid_file + ".ctl")
        self._ctl.open()

    def _log_listening(self) -> None:
        """Log where the workers will listen."""
        if self.address.path is not None:
            addresses = [self.address]
        else:
            addresses = [Address(self.host, port) for port in sorted({slot.port for slot in self._slots})]
        where = ", ".join(str(address) for address in addresses + self.more_addresses)
        count = self._slots.target
        log.info("master %d: %d worker%s on %s", os.getpid(), count, "" if count == 1 else "s", where or "(none)")

    def _cleanup(self) -> None:
        """Kill what is left, close everything, remove the pid file (always runs at the end of start)."""
        for worker in list(self._by_pid.values()):
            self.stopped_cleanly = False
            self._signal(worker, signal.SIGKILL)
        for pid in list(self._by_pid):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            worker = self._by_pid.pop(pid)
            self._close_channel(worker)
        if self._ctl is not None:
            self._guarded(self._ctl.close, "closing the control socket")
            self._ctl = None
        for slot in list(self._slots):
            if slot.sock is not None:
                slot.sock.close()
        if self._shared_sock is not None:
            self._shared_sock.close()
        for sock in self._more_socks:
            sock.close()
        for path in self._unix_paths:  # bound by this master: gone with it
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self._pidfile is not None:
            self._pidfile.remove()
        if self._output_path is not None and self._output_fd is not None:
            os.close(self._output_fd)
        if self._access_fd is not None:
            os.close(self._access_fd)
        # The signal handlers go last: a late TERM or QUIT (a second stop request) meets the previous
        # disposition only once nothing is left to clean up (no socket bound, no pid file).
        if self._router is not None:
            self._router.restore()
        if self._selector is not None:
            self._selector.close()
        if self._pipe is not None:
            self._pipe.close()
        started, self.state = self.state != "new", "stopped"
        if started:  # a master that never started (a port in use, the app failed) was never announced
            log.info("master %d stopped", os.getpid())


def _checked_hooks(**hooks: Callable[..., Any] | None) -> dict[str, Callable[..., Any]]:
    """Check each keyword hook accepts its arguments (fail at construction, not at first use)."""
    checked = {}
    for name, function in hooks.items():
        if function is None:
            continue
        if not callable(function):
            raise TypeError(f"hook {name} must be callable, got {function!r}")
        try:
            inspect.signature(function).bind(*HOOK_ARGUMENTS[name])
        except TypeError as exc:
            raise TypeError(f"hook {name} must accept ({', '.join(HOOK_ARGUMENTS[name])}): {exc}") from None
        except ValueError:  # builtins without a signature: trust them
            pass
        checked[name] = function
    return checked
