"""ControlServer: the unix socket next to the pid file, served by the master's own loop (master)."""

from __future__ import annotations

import errno
import logging
import os
import select
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
    return _UCRED.unpack(data)[1]


class _Connection:
    """One client of the control socket: its socket, its frame reader and its unsent output."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader(MAX_REQUEST)
        self.outgoing = bytearray()
        # One entry per request, in order; None until its reply is ready (replies keep request order).
        self.replies: deque[list[bytes | None]] = deque()
        self.closed = False
        self.in_flight = 0  # requests dispatched whose reply is not ready yet

    def fileno(self) -> int:
        return self.sock.fileno()


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

    def open(self) -> "ControlServer":
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

    def _reply_and_close(self, conn: _Connection, reply: dict[str, Any]) -> None:
        conn.outgoing += encode_frame(reply)
        self._flush(conn)
        conn.sock.close()

    def _on_readable(self, conn: _Connection) -> None:
        """Read one chunk from a client and answer every complete request in it. Runs in the master."""
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
            conn.outgoing += conn.replies.popleft()[0]  # type: ignore[operator]

    def _encode_reply(self, reply: dict[str, Any]) -> bytes:
        try:
            return encode_frame(reply)
        except FrameError as exc:  # e.g. a worker's result too large for one frame
            return encode_frame(reply_error(reply.get("id"), f"reply cannot be sent: {exc}"))

    def _flush(self, conn: _Connection) -> bool:
        """Send queued output, waiting at most ``send_timeout``; False if the client is too slow."""
        if len(conn.outgoing) > self.max_outgoing:
            log.warning("control socket: dropping a client that does not read its replies")
            return False
        deadline = time.monotonic() + self.send_timeout
        while conn.outgoing:
            try:
                sent = conn.sock.send(conn.outgoing)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return False
            del conn.outgoing[:sent]
            if conn.outgoing and not self._wait_writable(conn, deadline):
                log.warning("control socket: dropping a client that does not read its replies")
                return False
        return True

    @staticmethod
    def _wait_writable(conn: _Connection, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        _, writable, _ = select.select([], [conn.sock], [], remaining)
        return bool(writable)

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.replies.clear()
        if self.connections.pop(conn.fileno(), None) is not None:
            self._unregister(conn)
        conn.sock.close()

    def _unregister(self, io: Any) -> None:
        # At shutdown the master may have torn its loop down already; closing must still finish.
        try:
            self.server.remove_io_handler(io)
        except (KeyError, ValueError, OSError) as exc:
            log.debug("control socket: %r was not registered: %s", io, exc)
