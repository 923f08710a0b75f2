"""The ASGI worker process: uvicorn's server on the inherited socket, our control channel in its loop.

Everything here runs in a worker (forked by the master or by a generation) whose app is ASGI;
``prefork.child.run_worker`` hands over to :func:`run_asgi_worker`. Fork hygiene, hooks, the
parent-death signal and the commands are those of a WSGI worker; the difference is the server:
uvicorn's ``Server`` serves HTTP/1.1 and WebSockets in one asyncio loop, and the control socket is
a reader in that same loop, so commands run between I/O events on the loop thread.

A graceful stop closes this worker's copy of the listener (the master keeps the socket and its
backlog for the successor), closes keep-alive connections as they become idle, lets requests in
flight finish with the connection closed after them, and keeps WebSockets open until shortly before
the master's kill deadline (``graceful_timeout``); then uvicorn's own shutdown closes them (1012,
"service restart"), runs the lifespan shutdown, and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from prefork import stdio
from prefork.asgi import detect_interface
from prefork.child import FRESH_GRACE, _access_log, become_worker, idle_close_delay, rss_bytes, run_on_stop
from prefork.child_control import ChannelEnd
from prefork.worker import Worker

log = logging.getLogger("prefork.worker")

SWEEP_INTERVAL = 0.05  # while draining: how often idle keep-alive connections are looked for
# While draining, a keep-alive connection whose last response went out less than this long ago is
# probably about to carry the client's next request (which is then answered with the connection
# closed after it); closing it now would race that request. One idle for longer is closed.
IDLE_GRACE = 0.5
# Before the master's SIGKILL at graceful_timeout, keep this much time (at most) for uvicorn's own
# shutdown: closing WebSockets, cancelling what is left, the lifespan shutdown.
SHUTDOWN_MARGIN = 1.0
CLOSE = (b"connection", b"close")
_NO_CYCLE: Any = object()  # a connection without an HTTP request cycle: a WebSocket


def run_asgi_worker(
    worker: Worker,
    *,
    app: Any,
    listener: socket.socket,
    control: socket.socket,
    output_fd: int | None,
    output_path: str | None,
    master_pid: int,
    close_inherited: Callable[[], None],
    **_ignored: Any,
) -> NoReturn:
    """Turn this freshly forked process into an ASGI worker; never returns (exits with its code).

    ``threads`` and ``inline`` (WSGI only) arrive in ``_ignored``: uvicorn serves in one loop.
    """
    become_worker(
        worker,
        title=f"prefork worker {worker.index} :{worker.port} (asgi)",
        output_fd=output_fd,
        master_pid=master_pid,
        close_inherited=close_inherited,
        make_runtime=lambda: AsgiRuntime(worker, _wrapped(worker, app), listener, control, output_path),
    )


def _wrapped(worker: Worker, app: Any) -> Any:
    """``worker.wrap_app(app)`` (worker).

    A mixin that wraps an ASGI app in WSGI middleware is a boot failure that says so.
    """
    wrapped = worker.wrap_app(app)
    if wrapped is app or detect_interface(app) != "asgi" or detect_interface(wrapped) == "asgi":
        return wrapped
    raise TypeError(
        f"{type(worker).__name__}.wrap_app turned the ASGI app {app!r} into {wrapped!r}, which is not an ASGI app"
    )


class AsgiRuntime:
    """The running ASGI worker: uvicorn's server, the control channel, counters, graceful drain."""

    def __init__(
        self, worker: Worker, app: Any, listener: socket.socket, control: socket.socket, output_path: str | None
    ) -> None:
        self.worker = worker
        self.listener = listener
        # The slot's listener, then one per further address every worker shares (Server(bind=[...])).
        self.listeners = [listener, *getattr(worker.server, "_more_socks", ())]
        self.access_log = _access_log(worker.server)
        if self.access_log is not None and not isinstance(app, type):  # an ASGI2 class is served unlogged
            app = self.access_log.wrap_asgi(app)
        self.control_socket = control
        self.output_path = output_path
        self.started_at = time.time()
        self.draining = False
        server = worker.server
        self.graceful_timeout = float(getattr(server, "graceful_timeout", 30.0))
        self.drain_started = 0.0
        self.was_empty = False  # the previous drain sweep found no connection
        options = {
            "lifespan": "auto",
            "log_config": None,
            "access_log": False,
            "backlog": getattr(server, "backlog", 2048),
            **getattr(server, "uvicorn_options", {}),
        }
        self.protocol_class = _protocol_class(_http_base(options.get("http", "auto")))
        options["http"] = self.protocol_class
        self.config = uvicorn.Config(app, **options)
        self.server = _UvicornServer(self.config, self)
        self.control: AsyncControl | None = None
        _quiet_uvicorn_info()

    def serve(self) -> int:
        """Run uvicorn in a new event loop until a graceful stop completes; return the exit code."""
        factory = _loop_factory(self.config.loop)
        loop = factory() if factory is not None else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._main())
        return self._finish()

    async def _main(self) -> None:
        """The control channel first (EOF during a slow startup still ends us), then uvicorn."""
        self.control = AsyncControl(self, self.control_socket, asyncio.get_running_loop())
        await self.server.serve(sockets=self.listeners)

    def started(self) -> None:
        """uvicorn ran the lifespan startup and listens: tell the master (loop thread)."""
        assert self.control is not None
        self.control.send_message({"event": "ready", "pid": os.getpid(), "interface": "asgi"})

    # -- commands (loop thread) ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``stats`` command's reply (the WSGI worker's keys, plus open connections and WebSockets)."""
        state = self.server.server_state
        websockets = sum(1 for conn in state.connections if getattr(conn, "cycle", _NO_CYCLE) is _NO_CYCLE)
        return {
            "pid": os.getpid(),
            "index": self.worker.index,
            "port": self.worker.port,
            "generation": self.worker.generation,
            "started_at": self.started_at,
            "requests": state.total_requests,
            "in_flight": len(state.tasks),
            "rss": rss_bytes(),
            "threads": 1,
            "inline": True,
            "draining": self.draining,
            "interface": "asgi",
            "connections": len(state.connections),
            "websockets": websockets,
        }

    def reopen_logs(self) -> None:
        """Reopen the output file (if a path was given) and logging's file handlers."""
        if self.output_path is not None:
            stdio.reopen_stdio(self.output_path)
        stdio.reopen_log_handlers()
        if self.access_log is not None:
            self.access_log.reopen()

    def master_gone(self) -> NoReturn:
        """The control channel hit EOF: the master is gone, so exit now."""
        log.warning("%s: master is gone, exiting", self.worker.describe())
        stdio.flush_all()
        os._exit(0)

    # -- graceful stop (loop thread) ---------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop accepting; close connections as they become idle; exit when none is left."""
        if self.draining:
            return
        self.draining = True
        self.drain_started = time.monotonic()
        _close_after_each_request(self.protocol_class)
        self._stop_accepting()
        # An odd slot's sweeps run after an even slot's: a proxy's retry of a request that met a
        # closing connection then finds the other port's still open (prefork.child).
        delay = idle_close_delay(self.worker.index)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._sweep)
        else:
            self._sweep()

    def _stop_accepting(self) -> None:
        """Stop taking connections from the listener; what is queued on it waits for the successor.

        asyncio's ``Server.close()`` would do it too, but a connection it accepted a moment before
        becomes a protocol an iteration later, and then finds the server closed (an assertion in
        ``Server._attach``): the socket is closed with the request unread, and the client gets a
        reset. So the loop just stops reading the listener; uvicorn's shutdown closes the server
        once the worker is drained. (uvloop registers the listener itself: it gets ``close()``.)
        """
        loop = asyncio.get_running_loop()
        if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            if all([loop.remove_reader(sock) for sock in self.listeners]):  # a list: every one, no short cut
                return
        for server in getattr(self.server, "servers", ()):
            server.close()

    def _sweep(self) -> None:
        """Close idle keep-alive connections; once none is left, or near the deadline, let uvicorn stop."""
        if self.server.should_exit:
            return
        now = time.monotonic()
        state = self.server.server_state
        for conn in list(state.connections):
            cycle = getattr(conn, "cycle", _NO_CYCLE)
            if cycle is _NO_CYCLE:
                continue  # a WebSocket stays open until the deadline
            if cycle is not None and not cycle.response_complete:
                _close_after(cycle)
            elif _quiet(conn, now):
                conn.shutdown()
        left = self.graceful_timeout - (now - self.drain_started)
        # A connection accepted just before the listener closed becomes a protocol an iteration or
        # two later: "none left" counts only when the previous sweep saw none either.
        drained, self.was_empty = self.was_empty and not state.connections, not state.connections
        if drained or left <= min(SHUTDOWN_MARGIN, self.graceful_timeout / 5):
            # uvicorn's shutdown closes what is left (WebSockets with 1012), waits for tasks at
            # most this long, runs the lifespan shutdown; the master kills us at graceful_timeout.
            self.config.timeout_graceful_shutdown = max(0.0, left - 0.2)  # type: ignore[assignment]
            self.server.should_exit = True
            return
        asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _finish(self) -> int:
        """Run on_stop, flush the control channel; return the exit code."""
        code = run_on_stop(self.worker)
        if self.access_log is not None:
            self.access_log.close()
        if self.control is not None:
            self.control.flush_blocking()
        return code


class _UvicornServer(uvicorn.Server):
    """uvicorn's server, told by our control channel when to stop, and reporting when it is ready."""

    def __init__(self, config: uvicorn.Config, runtime: AsgiRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no handlers: the master's TERM means stop now; a graceful stop is the stop command."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (lifespan, then listen), then the ready message."""
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            log.error("%s: the app's lifespan startup failed; exiting before ready", self.runtime.worker.describe())
            raise
        if self.started:
            _one_connection_per_wakeup(asyncio.get_running_loop(), sockets or [])
            self.runtime.started()


def _one_connection_per_wakeup(loop: asyncio.AbstractEventLoop, sockets: list[socket.socket]) -> None:
    """Have the loop accept one connection each time a listener is readable (worker, after uvicorn's startup).

    asyncio accepts up to ``backlog`` connections per wake-up. Every worker shares the socket of an
    address, so the first to wake would take a whole burst of connections (keep-alive clients then
    stay on it). Taking one, then running the loop once, shares a burst out over the workers that
    are idle; a worker whose loop is busy takes none. (uvloop accepts in its own code: left as is.)
    """
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return
    selector = loop._selector  # type: ignore[attr-defined]  # asyncio's own, where the reader is kept
    for sock in sockets:
        reader = selector.get_key(sock.fileno()).data[0]  # (reader, writer) handles
        callback, args = reader._callback, list(reader._args)  # read before remove_reader() clears them
        # _accept_connection(protocol_factory, sock, sslcontext, server, backlog, ...)
        if callback != loop._accept_connection or len(args) < 5 or args[1] is not sock:  # type: ignore[attr-defined]
            log.debug("asyncio's accept callback is not the expected one: accepting in batches")
            return
        args[4] = 1
        loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), callback, *args)


class AsyncControl(ChannelEnd):
    """The worker's end of the control channel, as a reader (and, when it backs up, a writer) in the loop."""

    def __init__(self, runtime: AsgiRuntime, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._init_channel(runtime)
        self.socket = sock
        self.loop = loop
        self.writing = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        self.receive(self.socket)

    def flush(self) -> None:
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.socket.send(self.outgoing) if self.outgoing else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.runtime.master_gone()
        del self.outgoing[:sent]
        if self.outgoing and not self.writing:
            self.loop.add_writer(self.socket.fileno(), self._flush)
            self.writing = True
        elif not self.outgoing and self.writing:
            self.loop.remove_writer(self.socket.fileno())
            self.writing = False


def _http_base(http: Any) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class for its ``http`` option (``"auto"``, ``"h11"``, ``"httptools"`` or a class)."""
    if not isinstance(http, str):
        given: type[asyncio.Protocol] = http
        return given
    if http == "auto":
        return AutoHTTPProtocol
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    protocol: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS.get(http, http))
    return protocol


def _protocol_class(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, remembering when each connection was made (worker).

    Nothing of ours runs per request while the worker serves: the graceful stop learns what it needs
    from uvicorn's own state (the request cycle, the keep-alive timer), and a draining worker gives
    the class the per-request step it needs then (:func:`_close_after_each_request`).
    """

    class PreforkHTTPProtocol(base):  # type: ignore[valid-type,misc]
        prefork_born = 0.0

        def connection_made(self, transport: Any) -> None:
            self.prefork_born = time.monotonic()
            super().connection_made(transport)

    return PreforkHTTPProtocol


def _close_after_each_request(protocol_class: type[asyncio.Protocol]) -> None:
    """From now on, every request that arrives is answered with the connection closed after it (draining).

    The class is this worker's own (made by :func:`_protocol_class` after the fork), so it can change.
    """
    receive = protocol_class.data_received

    def data_received(self: Any, data: bytes) -> None:
        receive(self, data)
        if self.cycle is not None:
            _close_after(self.cycle)  # a request that arrived while draining

    protocol_class.data_received = data_received  # type: ignore[method-assign]


def _close_after(cycle: Any) -> None:
    """Close the connection after this request's response, and say so in it (``Connection: close``).

    Without the header a client may reuse the connection before it sees the close, and its next
    request meets a reset. uvicorn's httptools protocol adds the header when ``keep_alive`` is off;
    its h11 protocol adds it when the request asked for it, so the request is made to ask.
    """
    cycle.keep_alive = False
    headers = cycle.scope.get("headers")
    if not getattr(cycle, "response_started", True) and isinstance(headers, list) and CLOSE not in headers:
        headers.append(CLOSE)


def _quiet(conn: Any, now: float) -> bool:
    """True for a keep-alive connection with no request in progress and nothing sent by the client."""
    timer = conn.timeout_keep_alive_task  # uvicorn's: set when a response completes, dropped when data arrives
    if conn.cycle is None:
        if now - conn.prefork_born < FRESH_GRACE:
            return False  # accepted a moment ago: its first request is on its way
    elif timer is None:
        return False  # bytes of the next request arrived after the last response: it is on its way
    elif now - (timer.when() - conn.timeout_keep_alive) < IDLE_GRACE:
        return False  # answered a moment ago (loop time is monotonic): the client's next request may be on its way
    h11_conn = getattr(conn, "conn", None)
    if h11_conn is not None and getattr(h11_conn, "trailing_data", (b"",))[0]:
        return False  # part of the next request is buffered
    transport = getattr(conn, "transport", None)
    raw = transport.get_extra_info("socket") if transport is not None else None
    if raw is None or raw.fileno() < 0:
        return True
    peek = socket.socket(fileno=raw.fileno())  # borrows the fd (detached below, never closed here)
    try:
        pending = peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing waiting
        return True
    finally:
        peek.detach()
    # Bytes waiting: a request on its way; serve it (then close). b"": the client left.
    return not pending


async def _never_served(scope: Any, receive: Any, send: Any) -> None:
    """The app of the Configs below (never called with arguments)."""


@functools.cache
def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvicorn's event loop factory for its ``loop`` option, found once per process tree.

    Found here at import (master or generation) for the default, so that a worker does not repeat
    the search: ``"auto"`` tries ``import uvloop``, and a failed import looks through every
    ``sys.path`` entry (1 ms of a worker's boot, most of it page faults on memory shared with the
    generation).
    """
    return uvicorn.Config(_never_served, loop=loop, log_config=None).get_loop_factory()


def _import_what_serving_imports() -> None:
    """Import now what uvicorn imports when a worker starts serving (its WebSocket protocol and the
    websockets library, the lifespan, the loop): this module is imported in the master or the
    generation, so every worker forked afterwards skips 25 ms of imports."""
    uvicorn.Config(_never_served, lifespan="auto", log_config=None).load()
    _loop_factory("auto")


_import_what_serving_imports()


def _quiet_uvicorn_info() -> None:
    """uvicorn's INFO lines repeat ours in every worker of every reload: WARNING, unless the user set a level."""
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
