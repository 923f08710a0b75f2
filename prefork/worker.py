"""Worker: the master's handle on one worker process, and that process's commands and hooks.

A ``Worker`` object is created in the master for every process it forks (``on_register`` runs
then), follows the fork into the child (where ``on_start``, the ``child_*`` commands and
``on_stop`` run), and is dropped by the master once the process has exited (``on_unregister``).
Mixins placed before ``Worker`` in the MRO add hooks and commands::

    class Stats:
        def child_dump(self, *args):   # command "dump", runs in the worker
            return {"args": list(args)}

    Server(app, worker_mixins=[Stats])
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prefork import commands
from prefork.control import FrameError, FrameReader, encode_frame, request

if TYPE_CHECKING:
    from prefork.child import Runtime
    from prefork.server import Server

log = logging.getLogger("prefork.worker")

Callback = Callable[[Any], None]


def iter_messages(reader: FrameReader, data: bytes) -> Iterator[dict[str, Any] | FrameError]:
    """Yield each message in ``data``, or the FrameError of a bad frame, and carry on after it."""
    while True:
        try:
            yield from reader.feed(data)
            return
        except FrameError as exc:
            yield exc
            if reader.broken:
                return
            data = b""


class CommandError(Exception):
    """A command failed: the worker replied with an error, did not reply in time, or is gone.

    ``index``, ``pid`` and ``command`` say which worker and which command; ``str(error)`` says why.
    """

    def __init__(
        self, message: str, *, index: int | None = None, pid: int | None = None, command: str | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.pid = pid
        self.command = command


class CommandTimeout(CommandError):
    """No reply arrived within the timeout."""


class WorkerGone(CommandError):
    """The worker exited (or its control channel closed) before it replied."""


SERVED_BY = {"wsgi": "waitress", "asgi": "uvicorn"}  # the HTTP server a worker of each interface runs


class Worker:
    """One worker process (see the module docstring for where each method runs)."""

    def __init__(self, server: Server, index: int, port: int, generation: int) -> None:
        self.server = server
        self.index = index
        self.port = port
        self.generation = generation
        self.code_generation = generation  # the generation whose code it serves (a rebase keeps the old one)
        self.pid: int | None = None
        self.ready = False  # set in the master when the worker reported it accepts connections
        # ... and this as soon as that report is read (its event may be queued): it may hold connections
        self.reported_ready = False
        self.interface: str | None = None  # "wsgi" (waitress) or "asgi" (uvicorn), from its ready report
        self.started_at: float | None = None  # wall-clock time of the fork
        self.ready_at: float | None = None
        self.stopping = False  # the master asked it to stop (or killed it)
        self.status: int | None = None  # exit code, or -signal, once reaped
        self._control: socket.socket | None = None
        self._reader = FrameReader()
        # Master: whole frames not yet taken by the channel, written when it is writable (never a
        # blocking send: a partial frame left behind by a timeout would desynchronise the channel).
        self._outgoing = bytearray()
        self._pending: dict[int, tuple[Callback, Any]] = {}
        self._runtime: Runtime | None = None  # set in the child
        self._kill_timer: Any = None  # master: SIGKILL deadline while stopping

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.index} pid {self.pid} port {self.port} generation {self.generation}>"

    def describe(self) -> str:
        """``worker 2 (pid 4711, port 8002)``: how log lines name a worker."""
        return f"worker {self.index} (pid {self.pid}, port {self.port})"

    # -- hooks (override in a mixin) -------------------------------------------------------------

    def on_register(self) -> None:
        """Master: this worker object was created; its process is about to be forked."""

    def on_unregister(self) -> None:
        """Master: this worker's process has exited (for any reason) and the master forgets it."""

    def on_start(self) -> None:
        """Worker: after fork and fork hygiene, before serving."""

    def on_stop(self) -> None:
        """Worker: after a graceful stop finished its in-flight requests, just before exit 0."""

    def wrap_app(self, app: Any) -> Any:
        """Worker: return the app (WSGI or ASGI, as given) this worker serves; a mixin's middleware goes here."""
        return app

    # -- master side -----------------------------------------------------------------------------

    def send_control_message(self, command: str, *args: Any) -> None:
        """Master: send ``command`` without waiting; an error reply is logged at WARNING."""

        def report(result: Any) -> None:
            if isinstance(result, CommandError):
                log.warning("%s: command %s failed: %s", self.describe(), command, result)

        self.call_async(command, *args, callback=report)

    def call(self, command: str, *args: Any, timeout: float = 5.0) -> Any:
        """Master: run ``command`` in the worker and return its result.

        Blocks the master loop for at most ``timeout`` seconds (other messages from this worker
        that arrive meanwhile are handled normally). Raises CommandError with the worker's error
        message, CommandTimeout, or WorkerGone.
        """
        box: list[Any] = []
        request_id = self.call_async(command, *args, timeout=timeout, callback=box.append)
        deadline = time.monotonic() + timeout
        while not box:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._expire(request_id, command, timeout)
                break
            for ready in self.server._wait_channels([self], remaining):
                self.server._read_worker(ready)
        result = box[0]
        if isinstance(result, CommandError):
            raise result
        return result

    def call_async(self, command: str, *args: Any, timeout: float = 5.0, callback: Callback | None = None) -> int:
        """Master: send ``command``; later call ``callback(result)`` from the master loop.

        ``result`` is the command's return value, or a CommandError (error reply, CommandTimeout
        after ``timeout`` seconds, WorkerGone). Returns the request id.
        """
        callback = callback or (lambda result: None)
        request_id = self.server._next_request_id()
        try:
            frame = encode_frame(request(request_id, command, args))
        except FrameError as exc:
            raise CommandError(str(exc), index=self.index, pid=self.pid, command=command) from exc
        if self._control is None:
            callback(self._error(WorkerGone, command, "worker is not running"))
            return request_id
        timer = self.server.call_later(timeout, lambda: self._expire(request_id, command, timeout))
        self._pending[request_id] = (callback, timer)
        # Queued whole and written when the channel takes it; a channel that cannot take it is
        # closed (this request and the others pending fail with WorkerGone) and the worker killed.
        self.server._send_frame(self, frame)
        return request_id

    def _error(self, kind: type[CommandError], command: str | None, message: str) -> CommandError:
        """Build an error naming this worker."""
        return kind(f"{self.describe()}: {command}: {message}", index=self.index, pid=self.pid, command=command)

    def _expire(self, request_id: int, command: str, timeout: float) -> None:
        """Master: fail a request that got no reply in time."""
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            entry[1].cancel()
            entry[0](self._error(CommandTimeout, command, f"no reply within {timeout:g} s"))

    def _resolve(self, message: dict[str, Any]) -> bool:
        """Master: hand a reply to the caller waiting for it; False when nobody waits for its id."""
        entry = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if entry is None:
            return False
        callback, timer = entry
        timer.cancel()
        if message.get("ok"):
            callback(message.get("result"))
        else:
            callback(self._error(CommandError, None, str(message.get("error", "error without a message"))))
        return True

    def _attach(self, sock: socket.socket) -> None:
        """Master: take the master end of the control channel (non-blocking: the loop writes it)."""
        sock.setblocking(False)
        self._control = sock

    def _detach(self, reason: str = "worker exited before it replied") -> None:
        """Master: close the control channel and fail every pending request with WorkerGone."""
        if self._control is not None:
            self._control.close()
            self._control = None
        self._outgoing.clear()
        pending, self._pending = self._pending, {}
        for callback, timer in pending.values():
            timer.cancel()
            callback(self._error(WorkerGone, None, reason))

    # -- built-in commands (run in the worker) ----------------------------------------------------

    def child_stop(self) -> None:
        """Stop gracefully (built-in)."""
        self._require_runtime().begin_drain()

    def child_ping(self) -> str:
        """Answer 'pong' (built-in)."""
        return "pong"

    def child_stats(self) -> dict[str, Any]:
        """Report pid, port, start time, requests served and in flight, RSS (built-in)."""
        return self._require_runtime().stats()

    def child_reopen_logs(self) -> None:
        """Reopen log files (built-in)."""
        self._require_runtime().reopen_logs()

    def child_help(self) -> dict[str, str]:
        """List the known commands (built-in)."""
        return commands.known_commands(self)

    def _require_runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("this command runs in a worker process, not in the master")
        return self._runtime
