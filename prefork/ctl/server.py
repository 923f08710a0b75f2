"""ControlServer: the unix socket next to the pid file, served by the master's own loop (master)."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import time
from collections import deque
from typing import Any

from prefork.control import (
    FrameError,
    FrameReader,
    encode_frame,
    reply_error,
)
from prefork.ctl.base import (
    _RECV_CHUNK,
    _UCRED,
    ACCEPT_PAUSE,
    MAX_IN_FLIGHT,
    MAX_REQUEST,
    ControlSocketError,
)
from prefork.ctl.commands import dispatch

log = logging.getLogger("prefork.ctl")


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket (Linux), else None."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(data)[1])


class _Connection:
    """One client of the control socket: its socket, its frame reader and its unsent output."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader(MAX_REQUEST)
        self.outgoing = bytearray()
        # One entry per request, in order; None until its reply is ready (replies keep request order).
        self.replies: deque[list[bytes | None]] = deque()
        self.closed = False
        self.reading = True  # False while its output waits: a client that does not read is not read
        self.in_flight = 0  # requests dispatched whose reply is not ready yet
        self.progress = 0.0  # monotonic time output last moved (or became pending)
        self.stall_timer: Any = None  # drops the client if its output does not move for send_timeout

    def fileno(self) -> int:
        return self.sock.fileno()


class _WriteWatch:
    """Write readiness of the clients with output pending, as one readable fd (master).

    The master's loop watches descriptors for reading only (``add_io_handler``). A selector of our
    own (epoll on Linux, kqueue on the BSDs) holding the clients whose output is pending is itself
    readable exactly when one of them is writable: the loop wakes on it and the replies are written
    without ever waiting. Where the platform's selector has no descriptor, ``pollable`` is False and
    a client whose output does not fit its socket at once is dropped.
    """

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.pollable = callable(getattr(self.selector, "fileno", None))

    def fileno(self) -> int:
        return self.selector.fileno()  # type: ignore[attr-defined]

    def watch(self, conn: _Connection) -> None:
        if conn.fileno() >= 0 and self.selector.get_map().get(conn.fileno()) is None:
            self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def unwatch(self, conn: _Connection) -> None:
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def writable(self) -> list[_Connection]:
        """The watched clients that can take output now (never waits)."""
        return [key.data for key, _ in self.selector.select(0)]

    def close(self) -> None:
        """Close the selector and the sockets of the clients it still watches.

        In the master a client is unwatched before it is closed, so nothing is left here when the
        ControlServer closes. In a freshly forked worker, where the master closes every io handler,
        this closes the clients that wait for writability (they are no io handler meanwhile): no
        worker keeps a copy of a control connection open.
        """
        for key in list(self.selector.get_map().values()):
            key.data.sock.close()
        self.selector.close()


class ControlServer:
    """Serve ``prefork ctl`` requests on a unix socket from the master's loop. Runs in the master.

    ``server`` needs ``add_io_handler``, ``remove_io_handler``, ``workers``, ``broadcast``,
    ``reload``, ``set_workers`` and ``generation`` (a :class:`prefork.Server`).
    """

    def __init__(
        self,
        server: Any,
        path: str | os.PathLike[str],
        *,
        max_connections: int = 16,
        send_timeout: float = 0.5,
        max_outgoing: int = 4 * 1024 * 1024,
    ) -> None:
        self.server = server
        self.path = os.fspath(path)
        self.max_connections = max_connections
        self.send_timeout = send_timeout
        self.max_outgoing = max_outgoing
        self.uid = os.geteuid()
        self.listener: socket.socket | None = None
        self.connections: dict[int, _Connection] = {}
        self._writes: _WriteWatch | None = None

    def open(self) -> ControlServer:
        """Bind the socket (mode 0600) and start accepting in the master's loop; return self.

        Raises ControlSocketError (an OSError and a CtlError) with a one-line message when the path
        is taken (not a socket, or a live master answers there) or the socket cannot be bound.
        """
        try:
            self._remove_stale()
            listener = self._bind()
        except ControlSocketError:
            raise
        except OSError as exc:
            reason = exc.strerror if isinstance(exc.strerror, str) and exc.strerror else str(exc)
            raise ControlSocketError(f"cannot open the control socket {self.path}: {reason}") from exc
        self.listener = listener
        self._writes = _WriteWatch()
        if self._writes.pollable:
            self.server.add_io_handler(self._writes, self._on_writable)
        self.server.add_io_handler(listener, self._on_accept)
        log.info("control socket listening on %s", self.path)
        return self

    def _bind(self) -> socket.socket:
        """A non-blocking listener bound at the path with mode 0600."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # umask, not chmod afterwards: the socket must never exist with wider permissions.
            old_umask = os.umask(0o177)
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    def close(self) -> None:
        """Close every connection and the listener, and remove the socket file."""
        for conn in list(self.connections.values()):
            self._drop(conn)
        if self._writes is not None:
            if self._writes.pollable:
                self._unregister(self._writes)
            self._writes.close()
            self._writes = None
        if self.listener is not None:
            self._unregister(self.listener)
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _remove_stale(self) -> None:
        """Unlink a socket left by a dead master; refuse if a live one answers or it is not a socket."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            log.warning("removing stale control socket %s", self.path)
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise ControlSocketError(f"another master is listening on {self.path}")

    def _on_accept(self, listener: socket.socket) -> None:
        """Accept every waiting client (the listener is readable). Runs in the master's loop."""
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, let the loop go on
                log.warning("control socket accept failed: %s", exc)
                self._pause_accepting(listener)
                return
            self._admit(sock)

    def _pause_accepting(self, listener: socket.socket) -> None:
        """Stop watching the listener for a moment: while accept fails (out of file descriptors)
        it stays readable, and the master loop would spin on it."""
        call_later = getattr(self.server, "call_later", None)
        if call_later is None:
            return
        self._unregister(listener)

        def resume() -> None:
            if self.listener is listener:
                self.server.add_io_handler(listener, self._on_accept)

        call_later(ACCEPT_PAUSE, resume)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        conn = _Connection(sock)
        uid = peer_uid(sock)
        if uid is not None and uid != self.uid and uid != 0:
            log.warning("control socket: refused a peer of uid %d", uid)
            self._reply_and_close(conn, reply_error(None, f"permission denied: uid {uid} is not {self.uid}"))
            return
        if len(self.connections) >= self.max_connections:
            log.warning("control socket: refused a client, %d connections open", len(self.connections))
            self._reply_and_close(conn, reply_error(None, "too many control connections"))
            return
        self.connections[conn.fileno()] = conn
        self.server.add_io_handler(conn, self._on_readable)

    @staticmethod
    def _reply_and_close(conn: _Connection, reply: dict[str, Any]) -> None:
        """Tell a refused client why, as far as its empty socket buffer takes it, and hang up."""
        try:
            conn.sock.send(encode_frame(reply))
        except OSError:
            pass  # it left already, or (never for a frame this small) its buffer is full
        conn.sock.close()

    def _on_readable(self, conn: _Connection) -> None:
        """Read one chunk from a client and answer every complete request in it. Runs in the master."""
        if conn.closed or not conn.reading:  # paused or dropped earlier in this turn of the loop
            return
        try:
            data = conn.sock.recv(_RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        keep = self._answer(conn, data)
        if not self._flush(conn) or not keep:
            self._drop(conn)

    def _answer(self, conn: _Connection, data: bytes) -> bool:
        """Start a reply for every frame in ``data``; return False when the stream is beyond repair."""
        while True:
            try:
                for message in conn.reader.feed(data):
                    self._start(conn, message)
                self._collect(conn)
                return True
            except FrameError as exc:
                self._queue(conn, reply_error(None, f"bad frame: {exc}"))
                if conn.reader.broken:
                    self._collect(conn)
                    return False
                data = b""  # go on with what follows the bad frame in the buffer

    def _queue(self, conn: _Connection, reply: dict[str, Any]) -> None:
        conn.replies.append([self._encode_reply(reply)])

    def _start(self, conn: _Connection, message: dict[str, Any]) -> None:
        """Dispatch one request; its reply takes its place in line when it is ready."""
        if conn.in_flight >= MAX_IN_FLIGHT:
            self._queue(conn, reply_error(message.get("id"), "too many requests in flight on this connection"))
            return
        entry: list[bytes | None] = [None]
        conn.replies.append(entry)
        conn.in_flight += 1

        def respond(reply: dict[str, Any]) -> None:
            entry[0] = self._encode_reply(reply)
            conn.in_flight -= 1
            if conn.closed or not asynchronous:
                return  # the client is gone, or _answer collects and flushes after the batch
            self._collect(conn)
            if not self._flush(conn):
                self._drop(conn)

        asynchronous = False
        dispatch(self.server, message, respond)
        asynchronous = True  # a reply arriving from now on comes from the master loop, later

    @staticmethod
    def _collect(conn: _Connection) -> None:
        """Move the replies that are ready, in request order, to the output buffer."""
        while conn.replies and conn.replies[0][0] is not None:
            reply = conn.replies.popleft()[0]
            assert reply is not None
            conn.outgoing += reply

    def _encode_reply(self, reply: dict[str, Any]) -> bytes:
        try:
            return encode_frame(reply)
        except FrameError as exc:  # e.g. a worker's result too large for one frame
            return encode_frame(reply_error(reply.get("id"), f"reply cannot be sent: {exc}"))

    def _flush(self, conn: _Connection) -> bool:
        """Send what the client's socket takes now, never waiting; False: drop the client.

        What is left waits for the socket to become writable (``_on_writable``), and the client's
        requests are not read meanwhile (a client that does not read its replies costs one chunk
        of requests, not a burst of work per chunk). A client is dropped when its unread output
        passes ``max_outgoing``, or when that output has not moved for ``send_timeout`` seconds
        (a timer of the master loop).
        """
        moved = False
        while conn.outgoing:
            try:
                sent = conn.sock.send(conn.outgoing)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return False
            del conn.outgoing[:sent]
            moved = True
        if not conn.outgoing:
            self._settled(conn)
            return True
        if len(conn.outgoing) > self.max_outgoing or self._writes is None or not self._writes.pollable:
            log.warning(
                "control socket: dropping a client that does not read its replies (%d bytes unread)", len(conn.outgoing)
            )
            return False
        if moved or conn.stall_timer is None:
            conn.progress = time.monotonic()
        self._writes.watch(conn)
        if conn.reading:
            conn.reading = False
            self._unregister(conn)
        self._arm_stall_timer(conn)
        return True

    def _on_writable(self, watch: _WriteWatch) -> None:
        """Some clients with output pending can take more. Runs in the master's loop."""
        for conn in watch.writable():
            if not self._flush(conn):
                self._drop(conn)

    def _settled(self, conn: _Connection) -> None:
        """The client's output is all sent (or it is gone): stop watching it for writability, and
        read its requests again."""
        if self._writes is not None:
            self._writes.unwatch(conn)
        if conn.stall_timer is not None:
            conn.stall_timer.cancel()
            conn.stall_timer = None
        if not conn.reading and not conn.closed:
            conn.reading = True
            self.server.add_io_handler(conn, self._on_readable)

    def _arm_stall_timer(self, conn: _Connection) -> None:
        """Drop the client if its output does not move for ``send_timeout`` (needs ``call_later``)."""
        call_later = getattr(self.server, "call_later", None)
        if call_later is None or conn.stall_timer is not None:
            return

        def check() -> None:
            conn.stall_timer = None
            if conn.closed or not conn.outgoing:
                return
            idle = time.monotonic() - conn.progress
            if idle >= self.send_timeout:
                log.warning(
                    "control socket: dropping a client that does not read its replies (%d bytes unread for %.1f s)",
                    len(conn.outgoing),
                    idle,
                )
                self._drop(conn)
            else:
                conn.stall_timer = call_later(self.send_timeout - idle, check)

        conn.stall_timer = call_later(self.send_timeout, check)

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.replies.clear()
        self._settled(conn)
        if self.connections.pop(conn.fileno(), None) is not None and conn.reading:
            self._unregister(conn)
        conn.sock.close()

    def _unregister(self, io: Any) -> None:
        # At shutdown the master may have torn its loop down already; closing must still finish.
        try:
            self.server.remove_io_handler(io)
        except (KeyError, ValueError, OSError) as exc:
            log.debug("control socket: %r was not registered: %s", io, exc)
