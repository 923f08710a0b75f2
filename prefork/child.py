"""The worker process: fork hygiene, waitress on the inherited socket, the control channel, drain.

Everything here runs in the worker, after ``os.fork()`` in the master. The control channel is a
dispatcher in waitress's own socket map, so commands run on the I/O loop thread between I/O events
while requests run on waitress's task threads.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import WSGITask

from prefork import forks, signals, stdio
from prefork.accesslog import AccessLog
from prefork.child_control import ChannelEnd
from prefork.proctitle import set_title
from prefork.worker import Worker

log = logging.getLogger("prefork.worker")

LOOP_TIMEOUT = 1.0  # waitress's own housekeeping interval (idle-channel cleanup); nothing of ours waits on it
# A draining worker of an odd slot closes its idle keep-alive connections this much later than one
# of an even slot. A proxy (nginx) that sent a request on a connection just closed retries it on
# another port at once; when every old worker closed its idle connections in the same instant (a
# roll retires them together), the retry met a closed connection too, and with every port tried
# nginx answered "502 no live upstreams". A request arriving meanwhile is served, with Connection: close.
IDLE_CLOSE_STAGGER = 0.01
# While draining, a connection accepted but not yet used is probably carrying a request right now:
# give it this long to arrive before treating the connection as idle.
FRESH_GRACE = 2.0
SEND_TIMEOUT = 60.0  # threads=1: how long a response may wait for a client that reads nothing


def idle_close_delay(index: int) -> float:
    """How long after its stop a draining worker of slot ``index`` first closes idle connections (worker)."""
    return IDLE_CLOSE_STAGGER * (index % 2)


def rss_bytes() -> int:
    """Resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # ru_maxrss is the peak, in KiB on Linux and bytes on macOS: the best we have elsewhere.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def run_worker(
    worker: Worker,
    *,
    app: Any,
    listener: socket.socket,
    control: socket.socket,
    threads: int,
    output_fd: int | None,
    output_path: str | None,
    master_pid: int,
    close_inherited: Callable[[], None],
    inline: bool = True,
) -> NoReturn:
    """Turn this freshly forked process into a worker; never returns (exits with the worker's code)."""
    if _serves_asgi(worker, app):  # uvicorn instead of waitress; the rest of a worker's life is the same
        from prefork.child_asgi import run_asgi_worker

        run_asgi_worker(
            worker,
            app=app,
            listener=listener,
            control=control,
            output_fd=output_fd,
            output_path=output_path,
            master_pid=master_pid,
            close_inherited=close_inherited,
        )
    become_worker(
        worker,
        title=f"prefork worker {worker.index} :{worker.port}",
        output_fd=output_fd,
        master_pid=master_pid,
        close_inherited=close_inherited,
        make_runtime=lambda: Runtime(
            worker, worker.wrap_app(app), listener, control, threads, output_path, inline=inline and threads == 1
        ),
    )


def become_worker(
    worker: Worker,
    *,
    title: str,
    output_fd: int | None,
    master_pid: int,
    close_inherited: Callable[[], None],
    make_runtime: Callable[[], Any],
) -> NoReturn:
    """Fork hygiene, ``on_start``, adoption, then serve until stopped; exits with the worker's code (worker).

    One life for both worker kinds: ``make_runtime`` builds waitress's (``Runtime``) or uvicorn's
    (``prefork.child_asgi.AsgiRuntime``) once the process is clean.
    """
    code = 1
    try:
        signals.reset_in_child(ignore=signals.LEFT_TO_MASTER)
        stdio.redirect_stdio(output_fd)
        close_inherited()
        random.seed()
        worker.pid = os.getpid()
        set_title(title)
        runtime = make_runtime()
        worker._runtime = runtime
        worker.on_start()
        if not forks.adopted(master_pid, signal.SIGTERM):  # the master died while we booted
            os._exit(0)
        code = runtime.serve()
    except SystemExit as exc:  # uvicorn exits 3 when the lifespan startup fails: a boot failure
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %s (pid %s, port %s) failed", worker.index, os.getpid(), worker.port)
        code = 1
    finally:
        stdio.flush_all()
        os._exit(code)


def _serves_asgi(worker: Worker, app: Any) -> bool:
    """True when this worker's app is to be served as ASGI (the server's ``interface``, or detected)."""
    from prefork.asgi import choose_interface

    return choose_interface(app, getattr(worker.server, "interface", "auto")) == "asgi"


class Runtime:
    """The running worker: waitress server, control channel, counters, graceful drain."""

    def __init__(
        self,
        worker: Worker,
        app: Any,
        listener: socket.socket,
        control: socket.socket,
        threads: int,
        output_path: str | None,
        inline: bool = False,
    ) -> None:
        self.worker = worker
        self.access_log = _access_log(worker.server)
        self.app = app if self.access_log is None else self.access_log.wrap(app)
        self.listener = listener
        self.control_socket = control
        self.threads = threads
        self.output_path = output_path
        self.map: dict[int, Any] = {}
        self.started_at = time.time()
        self.served = 0
        self.in_flight = 0
        self.draining = False
        # draining: when idle keep-alive connections are first closed (time.monotonic()); 0.0 once they were
        self.close_idle_at = 0.0
        self.finished = False
        self.gated = False  # the listeners were left out of the last poll: every thread was busy
        self._lock = threading.Lock()
        # threads=1: requests run on the loop thread (see InlineDispatcher), else on waitress's threads.
        self.inline: InlineDispatcher | None = InlineDispatcher() if inline else None
        self.server: Any = None  # waitress's server on the slot's listener
        self.servers: list[Any] = []  # that one, then one per further address (Server(bind=[...]))
        self.control: ControlDispatcher | None = None

    def serve(self) -> int:
        """Serve until a graceful stop completes; return the exit code."""
        dispatcher = self.inline
        for sock in [self.listener, *getattr(self.worker.server, "_more_socks", ())]:
            server = create_server(
                self.app,
                map=self.map,
                sockets=[sock],
                threads=self.threads,
                asyncore_use_poll=True,
                _dispatcher=dispatcher,
            )
            server.channel_class = _channel_class(self)
            server.readable = _accepting_while_free(server, self)
            dispatcher = server.task_dispatcher  # one pool of task threads for every address
            self.servers.append(server)
        self.server = self.servers[0]
        self.control = ControlDispatcher(self, self.control_socket, self.map)
        # The listener has been listening since the master bound it: we accept from the next poll on.
        self.control.send_message({"event": "ready", "pid": os.getpid(), "interface": "wsgi"})
        while not self.finished:
            pending = self.inline is not None and self.inline.queue
            wasyncore.loop(timeout=0 if pending else self._loop_timeout(), map=self.map, use_poll=True, count=1)
            if self.inline is not None:
                self.inline.run_pending()
            if self.draining:
                self._check_drained()
        return self._finish()

    def _loop_timeout(self) -> float:
        """How long the loop may wait for an event: until the drain's idle-close time, if that is sooner."""
        if self.draining and self.close_idle_at:  # not closed yet: wake up for it, even if it is due now
            return max(0.0, min(LOOP_TIMEOUT, self.close_idle_at - time.monotonic()))
        return LOOP_TIMEOUT

    # -- counters (task threads) -----------------------------------------------------------------

    def task_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def task_finished(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1
            wake, self.gated = self.gated, False
        if wake and self.inline is None:  # the loop polls without the listeners: have it look again
            self.server.pull_trigger()

    def has_free_thread(self) -> bool:
        """Loop thread: True when a request accepted now would start at once (no request waits for a thread).

        False makes the loop leave the listeners out of its poll: on a shared address an idle worker
        takes the connection instead (task_finished brings them back).
        """
        queued = len(self.inline.queue) if self.inline is not None else len(self.server.task_dispatcher.queue)
        with self._lock:
            self.gated = self.in_flight + queued >= self.threads
            return not self.gated

    def stats(self) -> dict[str, Any]:
        """The ``stats`` command's reply."""
        return {
            "pid": os.getpid(),
            "index": self.worker.index,
            "port": self.worker.port,
            "generation": self.worker.generation,
            "started_at": self.started_at,
            "requests": self.served,
            "in_flight": self.in_flight,
            "rss": rss_bytes(),
            "threads": self.threads,
            "inline": self.inline is not None,
            "draining": self.draining,
        }

    def reopen_logs(self) -> None:
        """Reopen the output file (if a path was given) and logging's file handlers."""
        if self.output_path is not None:
            stdio.reopen_stdio(self.output_path)
        if self.access_log is not None:
            self.access_log.reopen()
        stdio.reopen_log_handlers()

    # -- graceful stop (loop thread) ---------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish with Connection: close."""
        if self.draining:
            return
        self.draining = True
        self.close_idle_at = time.monotonic() + idle_close_delay(self.worker.index)
        for server in self.servers:
            server.accepting = False
            if server is self.server and not self.worker.server.shared_port:
                self._accept_queued(server)  # its own port: nobody else accepts there
            server.del_channel()
            # Our copy only: the master (and a successor) keep the socket and its backlog.
            server.socket.close()
        self._check_drained()

    def _accept_queued(self, server: Any) -> None:
        """Take the connections already queued on the slot's own port; they are served with Connection: close.

        Where ours is the last copy (a slot removed: the master closes its copy once we exit),
        closing it would reset them. (A shared address keeps being accepted on by the others.)
        """
        for _ in range(server.adj.backlog):  # at most what the queue can hold
            try:
                conn, addr = server.socket.accept()  # non-blocking: the dispatcher set it so
                server.set_socket_options(conn)
            except OSError:  # BlockingIOError: nothing more is queued
                return
            server.channel_class(server, conn, server.fix_addr(addr), server.adj, map=self.map)

    def _check_drained(self) -> None:
        """Close the connections that became idle; finish once no connection is left."""
        if self.close_idle_at:
            if time.monotonic() < self.close_idle_at:
                return
            self.close_idle_at = 0.0  # from now on each check closes what became idle
        for server in self.servers:
            for channel in list(server.active_channels.values()):
                if _idle(channel):
                    channel.handle_close()
        if not any(server.active_channels for server in self.servers):
            self.finished = True

    def _finish(self) -> int:
        """Run on_stop, stop the task threads, flush the control channel; return the exit code."""
        code = run_on_stop(self.worker)
        self.server.task_dispatcher.shutdown(cancel_pending=False, timeout=1)
        if self.access_log is not None:
            self.access_log.close()
        if self.control is not None:
            self.control.flush_blocking()
        return code

    def master_gone(self) -> NoReturn:
        """The control channel hit EOF: the master is gone, so exit now."""
        log.warning("%s: master is gone, exiting", self.worker.describe())
        stdio.flush_all()
        os._exit(0)


def run_on_stop(worker: Worker) -> int:
    """Run the worker's ``on_stop`` hook at the end of a graceful stop; the exit code (worker)."""
    try:
        worker.on_stop()
    except Exception:
        log.exception("hook on_stop failed in %s", worker.describe())
        return 1
    return 0


def _access_log(server: Any) -> AccessLog | None:
    """The access log this worker writes, when the master opened one (``Server(access_log=...)``)."""
    fd, path = getattr(server, "_access_fd", None), getattr(server, "_access_path", None)
    if path is not None:  # opened afresh: a worker forked after a USR1 writes to the new file
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return None if fd is None else AccessLog(fd, path)


def _idle(channel: HTTPChannel) -> bool:
    """True for a keep-alive connection with nothing in progress and nothing sent by the client."""
    if channel.requests or channel.request is not None or channel.total_outbufs_len:
        return False
    if not getattr(channel, "prefork_used", False) and time.time() - channel.creation_time < FRESH_GRACE:
        return False  # accepted a moment ago: its first request is on its way
    try:
        pending = channel.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return True
    # Bytes waiting: a request on its way; serve it (with Connection: close). b"": the client left.
    return not pending


def _accepting_while_free(server: Any, runtime: Runtime) -> Callable[[], bool]:
    """waitress's ``readable()`` for a listener, false while every request thread of the worker is busy.

    A busy worker then takes no connection that an idle one could serve: on a shared address the
    others accept it. (With threads=1 the loop does not even poll while it serves a request.)
    """
    waitress_readable = server.readable

    def readable() -> bool:
        return bool(waitress_readable()) and runtime.has_free_thread()

    return readable


def _channel_class(runtime: Runtime) -> type[HTTPChannel]:
    """A waitress channel whose tasks count requests and close the connection while draining."""

    class CountingTask(WSGITask):  # type: ignore[misc]  # waitress has no type information
        def service(self) -> None:
            runtime.task_started()
            try:
                super().service()
            finally:
                runtime.task_finished()

        def build_response_header(self) -> bytes:
            if runtime.draining:
                self.request.headers["CONNECTION"] = "close"
            header: bytes = super().build_response_header()
            return header

    class Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type information
        task_class = CountingTask
        prefork_used = False  # set once the client sent something: only then can it be idle
        connected: bool  # waitress's, declared for the type checker

        def received(self, data: bytes) -> bool:
            self.prefork_used = True
            return bool(super().received(data))

        def _flush_outbufs_below_high_watermark(self) -> None:
            if runtime.inline is None:
                super()._flush_outbufs_below_high_watermark()
                return
            # Inline: we are the loop thread, nobody else will flush; block on the socket instead.
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                _, writable, _ = select.select([], [self.socket], [], SEND_TIMEOUT)
                flushed, failed = self._flush_exception(self._flush_some, do_close=False)
                if failed or not flushed:
                    # Writable but nothing sent (the peer is gone), or no progress in SEND_TIMEOUT:
                    # give up on the client; write_soon raises ClientDisconnected, the loop closes it.
                    self.connected = False
                    self.will_close = True
                    return

    return Channel


class InlineDispatcher:
    """Run requests on the I/O loop thread (threads=1): no hand-off between two threads per request.

    waitress queues a channel here from inside ``received()`` (holding the channel's lock), so the
    request runs right after the poll that completed it, not from ``add_task`` itself.
    """

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()

    def add_task(self, task: Any) -> None:
        self.queue.append(task)

    def run_pending(self) -> None:
        """Serve every queued request (a pipelined one queues the next as it finishes)."""
        while self.queue:
            task = self.queue.popleft()
            try:
                task.service()
            except BaseException:
                log.exception("exception when serving %r", task)

    def set_thread_count(self, count: int) -> None:
        """No threads to start: the loop thread serves."""

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        if cancel_pending:
            while self.queue:
                self.queue.popleft().cancel()
        return True


class ControlDispatcher(ChannelEnd, wasyncore.dispatcher):  # type: ignore[misc]  # waitress is untyped
    """The worker's end of the control channel, in waitress's socket map (loop thread)."""

    def __init__(self, runtime: Runtime, sock: socket.socket, map: dict[int, Any]) -> None:
        wasyncore.dispatcher.__init__(self, sock, map=map)
        self._init_channel(runtime)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return bool(self.outgoing)

    def handle_read(self) -> None:
        self.receive(self.socket)

    def flush(self) -> None:
        self.handle_write()

    def handle_write(self) -> None:
        try:
            sent = self.socket.send(self.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.runtime.master_gone()
        del self.outgoing[:sent]

    def handle_close(self) -> None:
        self.runtime.master_gone()

    def handle_error(self) -> None:
        log.exception("%s: control channel error", self.runtime.worker.describe())
