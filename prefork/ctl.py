"""The operator's control socket (``prefork ctl``): a unix socket next to the pid file.

Two halves share this module:

- :class:`ControlServer` runs in the master. It listens on ``<pid_file>.ctl`` (mode 0600, peers of
  another uid refused with SO_PEERCRED), reads :mod:`prefork.control` frames from every connection
  through the master's own loop (``server.add_io_handler``), and answers each request with one reply.
- :func:`call` and :func:`ctl_main` run in the operator's process (``prefork ctl --pid FILE status``).

Commands are a small registry (:data:`COMMANDS`), each with one line of help; an unknown command's
error reply lists them. Nothing a client sends can crash the master or grow its memory without bound:
frames are limited to :data:`MAX_REQUEST`, connections to ``max_connections``, replies that a client
does not read are dropped with the connection after ``send_timeout``.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import socket
import stat
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from prefork.control import (
    FrameError,
    FrameReader,
    encode_frame,
    parse_request,
    recv_message,
    reply_error,
    reply_ok,
    request,
    send_message,
)

log = logging.getLogger("prefork.ctl")

MAX_REQUEST = 64 * 1024  # an operator's request is a command and a few args; anything larger is refused
MAX_WORKERS = 1024  # `workers N` above this is a typo or an attack, not a fleet
MAX_IN_FLIGHT = 8  # requests per connection waiting for the workers' answers
STATS_TIMEOUT = 2.0  # seconds `status`/`stats` wait for a worker's stats
COMMAND_TIMEOUT = 5.0  # seconds `command` waits for a worker's reply
ACCEPT_PAUSE = 0.5  # seconds the listener rests after accept failed (EMFILE)
_RECV_CHUNK = 64 * 1024
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}

# Exit codes of `prefork ctl`.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_MASTER = 0, 1, 2, 3


class CtlError(Exception):
    """A ``prefork ctl`` request failed; the subclasses say how."""


class ErrorReply(CtlError):
    """The master answered with an error reply (bad command, bad arguments, a failure)."""


class NoMasterError(CtlError):
    """No master answers on the control socket (not running, or a stale socket)."""


class CtlTimeout(CtlError, TimeoutError):
    """The master did not reply before the deadline."""


class CommandError(Exception):
    """Raised by a command handler (in the master) to send an error reply with this message."""


def socket_path(pid_file: str | os.PathLike[str]) -> str:
    """Return the control socket path that belongs to ``pid_file`` (``<pid_file>.ctl``)."""
    return os.fspath(pid_file) + ".ctl"


# ---------------------------------------------------------------------------------------------
# Commands (run in the master)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One ctl command: its handler ``handler(server, args) -> JSON value`` and one line of help."""

    handler: Callable[[Any, list[Any]], Any]
    usage: str
    help: str


def _no_args(name: str, args: list[Any]) -> None:
    if args:
        raise CommandError(f"{name} takes no arguments, got {len(args)}")


def _is_error(value: Any) -> bool:
    return isinstance(value, BaseException) or (isinstance(value, dict) and value.get("ok") is False)


def _error_text(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    return str(value.get("error", value))


def _jsonable(value: Any) -> Any:
    """Return ``value`` if it survives JSON encoding, else its repr (a worker may answer oddly)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _first(stats: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in stats:
            return stats[key]
    return None


def _uptime(started_at: Any) -> float | None:
    """Seconds since ``started_at`` (wall-clock epoch, or ``time.monotonic()`` if it is small)."""
    if not isinstance(started_at, (int, float)):
        return None
    now = time.time() if started_at > 1e9 else time.monotonic()
    return round(max(0.0, now - started_at), 3)


@dataclass(frozen=True)
class Deferred:
    """A command result that arrives later, so the master loop never waits on the workers.

    ``start(callback)`` begins the work and arranges for ``callback(raw)`` to run later in the
    master loop; ``finish(raw)`` turns ``raw`` into the reply's result.
    """

    start: Callable[[Callable[[Any], None]], None]
    finish: Callable[[Any], Any]


def _broadcast(server: Any, command: str, args: Sequence[Any], timeout: float,
               finish: Callable[[dict[int, Any]], Any]) -> Any:
    """Run a worker command everywhere: without blocking when the server has ``broadcast_async``."""
    if hasattr(server, "broadcast_async"):
        return Deferred(
            lambda callback: server.broadcast_async(command, *args, timeout=timeout, callback=callback), finish)
    return finish(server.broadcast(command, *args, timeout=timeout))


def _stats_by_pid(results: dict[int, Any]) -> dict[int, Any]:
    return {v["pid"]: v for v in results.values() if isinstance(v, dict) and isinstance(v.get("pid"), int)}


def _worker_row(worker: Any, stats: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slot": worker.index,
        "pid": worker.pid,
        "port": worker.port,
        "generation": getattr(worker, "generation", None),
        "ready": bool(getattr(worker, "ready", False)),
        "uptime": _uptime(getattr(worker, "started_at", None)),
        "served": None,
        "in_flight": None,
        "rss": None,
    }
    if isinstance(stats, dict) and not _is_error(stats):
        row["served"] = _first(stats, "requests_served", "requests", "served")
        row["in_flight"] = _first(stats, "requests_in_flight", "in_flight")
        row["rss"] = _first(stats, "rss", "rss_bytes", "max_rss")
    elif stats is not None:
        row["error"] = _error_text(stats)
    return row


def cmd_status(server: Any, args: list[Any]) -> Any:
    """Master and per-worker status (one row per live worker)."""
    _no_args("status", args)
    asked = {id(w) for w in server.workers}  # the workers the broadcast asks

    def finish(results: dict[int, Any]) -> dict[str, Any]:
        by_pid = _stats_by_pid(results)
        # all_workers (prefork.Server) also lists a roll's successors and workers that are stopping.
        listed = getattr(server, "all_workers", None) or server.workers
        rows = []
        for worker in sorted(listed, key=lambda w: (w.index, getattr(w, "generation", 0) or 0)):
            stats = by_pid.get(worker.pid)
            if stats is None and id(worker) in asked:
                stats = results.get(worker.index)  # an error in place of stats carries no pid
            rows.append(_worker_row(worker, stats))
        return {"master_pid": os.getpid(), "generation": getattr(server, "generation", None), "workers": rows}

    return _broadcast(server, "stats", (), STATS_TIMEOUT, finish)


def _per_worker(results: dict[int, Any]) -> dict[str, Any]:
    """Turn broadcast results into JSON: ``{"0": {"ok": true, "result": ...}, ...}``."""
    out: dict[str, Any] = {}
    for index, value in sorted(results.items()):
        if _is_error(value):
            out[str(index)] = {"ok": False, "error": _error_text(value)}
        else:
            out[str(index)] = {"ok": True, "result": _jsonable(value)}
    return out


def cmd_stats(server: Any, args: list[Any]) -> Any:
    """Raw ``stats`` of every worker, keyed by slot."""
    _no_args("stats", args)
    return _broadcast(server, "stats", (), STATS_TIMEOUT, _per_worker)


def cmd_reload(server: Any, args: list[Any]) -> dict[str, Any]:
    """Ask the master for a rolling reload (as SIGHUP does)."""
    _no_args("reload", args)
    server.reload()
    return {"reload": "requested", "generation": getattr(server, "generation", None)}


def _worker_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CommandError(f"workers N: N must be an integer, got {type(value).__name__}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise CommandError(f"workers N: N must be an integer >= 0, got {value!r}")
        value = int(value)
    if not 0 <= value <= MAX_WORKERS:
        raise CommandError(f"workers N: N must be between 0 and {MAX_WORKERS}, got {value}")
    return value


def cmd_workers(server: Any, args: list[Any]) -> dict[str, Any]:
    """Set the number of worker slots (TTIN/TTOU for any N)."""
    if len(args) != 1:
        raise CommandError(f"usage: workers N (one integer), got {len(args)} arguments")
    count = _worker_count(args[0])
    server.set_workers(count)
    return {"workers": count}


def cmd_command(server: Any, args: list[Any]) -> Any:
    """Send a worker command to every worker; reply per slot."""
    if not args or not isinstance(args[0], str) or not args[0]:
        raise CommandError("usage: command NAME [ARGS...] (NAME a non-empty string)")
    return _broadcast(server, args[0], args[1:], COMMAND_TIMEOUT, _per_worker)


def cmd_help(server: Any, args: list[Any]) -> dict[str, str]:
    """One line of help per command."""
    return {c.usage: c.help for c in COMMANDS.values()}


COMMANDS: dict[str, Command] = {
    "status": Command(cmd_status, "status", "table of workers: slot, pid, port, generation, uptime, served, in flight, RSS"),
    "stats": Command(cmd_stats, "stats", "raw stats of every worker as JSON, keyed by slot"),
    "reload": Command(cmd_reload, "reload", "rolling reload of every worker (like SIGHUP)"),
    "workers": Command(cmd_workers, "workers N", "set the number of worker slots to N >= 0"),
    "command": Command(cmd_command, "command NAME [ARGS...]", "send a worker command to every worker"),
    "help": Command(cmd_help, "help", "this list"),
}


def dispatch(server: Any, message: dict[str, Any], respond: Callable[[dict[str, Any]], None]) -> None:
    """Run one request against ``server`` and ``respond(reply)``, now or later. Runs in the master.

    Never raises: a bad request, a failing command or a bug in one becomes an error reply.
    """
    request_id = message.get("id")
    try:
        request_id, name, args = parse_request(message)
        command = COMMANDS.get(name)
        if command is None:
            raise CommandError(f"unknown command {name[:64]!r}; commands: {', '.join(COMMANDS)}")
        outcome = command.handler(server, args)
        if isinstance(outcome, Deferred):
            outcome.start(lambda raw: respond(_finished(request_id, name, outcome.finish, raw)))
        else:
            respond(reply_ok(request_id, outcome))
    except (FrameError, CommandError) as exc:
        respond(reply_error(request_id, str(exc)))
    except Exception as exc:  # a bug in a handler or the server must not take the master down
        log.exception("ctl command %r failed", message.get("command"))
        respond(reply_error(request_id, f"internal error: {type(exc).__name__}: {exc}"))


def _finished(request_id: Any, name: str, finish: Callable[[Any], Any], raw: Any) -> dict[str, Any]:
    try:
        return reply_ok(request_id, finish(raw))
    except Exception as exc:
        log.exception("ctl command %r failed", name)
        return reply_error(request_id, f"internal error: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------
# The socket (runs in the master)
# ---------------------------------------------------------------------------------------------


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
        """Bind the socket (mode 0600) and start accepting in the master's loop; return self."""
        self._remove_stale()
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
        self.listener = listener
        self.server.add_io_handler(listener, self._on_accept)
        log.info("control socket listening on %s", self.path)
        return self

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
            raise CtlError(f"{self.path} exists and is not a socket; refusing to replace it")
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
        raise CtlError(f"another master is listening on {self.path}")

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


# ---------------------------------------------------------------------------------------------
# The client (runs in the operator's process)
# ---------------------------------------------------------------------------------------------


def call(path: str | os.PathLike[str], command: str, *args: Any, timeout: float = 5.0) -> Any:
    """Send one command to the master listening on ``path``; return its result.

    Raises :class:`NoMasterError` when nothing listens there, :class:`CtlTimeout` when no reply
    arrives within ``timeout`` seconds, :class:`ErrorReply` when the master answers with an error.
    """
    path = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoMasterError(f"no master listening on {path}: {exc.strerror}") from exc
        except socket.timeout as exc:
            raise CtlTimeout(f"connecting to {path} timed out") from exc
        return _exchange(sock, path, command, list(args), timeout)
    finally:
        sock.close()


def _exchange(sock: socket.socket, path: str, command: str, args: list[Any], timeout: float) -> Any:
    try:
        try:
            send_message(sock, request(1, command, args))
        except (BrokenPipeError, ConnectionResetError):
            pass  # a master that refuses us replies at once and hangs up: its reply is still readable
        reply = recv_message(sock, FrameReader(), timeout)
    except TimeoutError as exc:
        raise CtlTimeout(f"no reply from {path} within {timeout} s") from exc
    except (EOFError, ConnectionError) as exc:
        raise CtlError(f"the master at {path} closed the connection: {exc}") from exc
    except FrameError as exc:
        raise CtlError(f"unreadable reply from {path}: {exc}") from exc
    if reply.get("ok") is True:
        return reply.get("result")
    raise ErrorReply(str(reply.get("error", "error reply without a message")))


def _human_seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    seconds = int(value)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _human_bytes(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


STATUS_COLUMNS = ("SLOT", "PID", "PORT", "GEN", "UPTIME", "SERVED", "INFLIGHT", "RSS")


def format_status(status: dict[str, Any]) -> str:
    """Render a ``status`` result as the table ``prefork ctl status`` prints."""
    rows = [STATUS_COLUMNS]
    for w in status.get("workers", []):
        rows.append(tuple(
            "-" if v is None else str(v)
            for v in (w.get("slot"), w.get("pid"), w.get("port"), w.get("generation"))
        ) + (
            _human_seconds(w.get("uptime")),
            "-" if w.get("served") is None else str(w["served"]),
            "-" if w.get("in_flight") is None else str(w["in_flight"]),
            _human_bytes(w.get("rss")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    header = f"master pid {status.get('master_pid')}, generation {status.get('generation')}, " \
             f"{len(rows) - 1} workers"
    return "\n".join([header, *lines])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork ctl",
        description="Talk to a running prefork master through its control socket (<pid file>.ctl).",
        epilog="Exit codes: 0 ok, 1 error reply, 2 usage, 3 no master.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", metavar="FILE", help="the master's pid file (the socket is FILE.ctl)")
    where.add_argument("--socket", metavar="PATH", help="the control socket itself")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help=COMMANDS["status"].help)
    sub.add_parser("stats", help=COMMANDS["stats"].help)
    sub.add_parser("reload", help=COMMANDS["reload"].help)
    sub.add_parser("help", help="list the master's commands")
    workers = sub.add_parser("workers", help=COMMANDS["workers"].help)
    workers.add_argument("count", type=int, metavar="N")
    command = sub.add_parser("command", help=COMMANDS["command"].help)
    command.add_argument("name", metavar="NAME")
    command.add_argument("args", nargs="*", metavar="ARGS")
    return parser


def _request_args(options: argparse.Namespace) -> list[Any]:
    if options.command == "workers":
        return [options.count]
    if options.command == "command":
        return [options.name, *options.args]
    return []


def _print_result(command: str, result: Any) -> int:
    if command == "status":
        print(format_status(result))
        return EXIT_OK
    if command == "help":
        for usage, text in result.items():
            print(f"{usage:<24} {text}")
        return EXIT_OK
    print(json.dumps(result, indent=2, sort_keys=True))
    if command == "command" and any(not r.get("ok", True) for r in result.values() if isinstance(r, dict)):
        return EXIT_ERROR  # some worker answered with an error
    return EXIT_OK


def ctl_main(argv: Sequence[str] | None = None) -> int:
    """Run ``prefork ctl`` with ``argv`` (the arguments after ``ctl``); return the exit code."""
    try:
        options = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    path = options.socket or socket_path(options.pid)
    try:
        result = call(path, options.command, *_request_args(options), timeout=options.timeout)
    except NoMasterError as exc:
        print(f"prefork ctl: {exc}", file=sys.stderr)
        return EXIT_NO_MASTER
    except CtlError as exc:
        print(f"prefork ctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _print_result(options.command, result)


if __name__ == "__main__":
    sys.exit(ctl_main(sys.argv[1:]))
