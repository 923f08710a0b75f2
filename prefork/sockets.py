"""Listening sockets bound by the master, and the per-worker control socketpair.

The master binds every listening socket once, before it forks, and keeps it across generations:
a successor accepts on the socket its predecessor used, so a connection that arrives during a
replacement waits in the backlog instead of being refused.

On one shared address every worker accepts on the same listening socket, and only while it can
serve: a worker busy with a request is not waiting for connections, so an idle one takes the next
(gunicorn's sync workers work so). A listener per worker (``SO_REUSEPORT``) would spread the
connections by a hash of their addresses instead, queueing about 1/N of them behind a slow request
while another worker idles, and a listener closed by a shrink would reset what is queued on it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass


class BindError(OSError):
    """A listening socket could not be bound (port in use, bad address, no permission)."""

    slot: int | None = None  # the worker whose own port it was (a port per worker), when known


@dataclass(frozen=True)
class Address:
    """Where workers listen: ``host:port`` (TCP), or the path of a Unix socket."""

    host: str = "127.0.0.1"
    port: int = 8000
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else format_address(self.host, self.port)


def parse_address(text: str, default_port: int = 8000) -> Address:
    """Parse ``HOST:PORT``, ``HOST``, ``[IPv6]:PORT`` or ``unix:PATH`` (gunicorn's ``--bind``).

    Raises ValueError with a one-line reason for anything else.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"{text!r} names no path (unix:PATH)")
        return Address(path=os.path.abspath(path))
    if text.startswith("["):  # [::1]:8000 or [::1]
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else (rest or None)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise ValueError(f"{text!r} names no host (HOST:PORT, e.g. 127.0.0.1:8000 or 0.0.0.0:8000)")
    if port_text is None:
        return Address(host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: {port_text!r} is not a port number")
    return Address(host, int(port_text))


def bind_unix(path: str, backlog: int = 2048) -> socket.socket:
    """Bind and listen on the Unix socket ``path`` (runs in the master).

    A socket file nobody listens on (left by a killed server) is replaced; a live one, or a file
    that is not a socket, is a BindError.
    """
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from exc
    return sock


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` when it is a Unix socket no process accepts on; BindError when one does."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(errno.EEXIST, f"cannot listen on unix:{path}: the file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a leftover of a server that was killed
        return
    except OSError:
        return  # let bind() report what is wrong
    finally:
        probe.close()
    raise BindError(errno.EADDRINUSE, f"cannot listen on unix:{path}: another process listens on it")


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """Bind and listen on ``host:port``; return the socket (runs in the master).

    ``port`` 0 asks the kernel for a free port; read it back with ``sock.getsockname()[1]``.
    Raises BindError naming the address when the bind fails.
    """
    sock = _bound(host, port)
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {format_address(host, port)}: {exc.strerror}") from exc
    return sock


def _bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet), or BindError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        # SO_REUSEADDR: a restarted master must be able to bind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {format_address(host, port)}: {exc.strerror}") from exc
    return sock


def bound_port(sock: socket.socket) -> int:
    """Return the port a listening socket is bound to (0 for a Unix socket)."""
    if sock.family == socket.AF_UNIX:
        return 0
    return int(sock.getsockname()[1])


def format_address(host: str, port: int) -> str:
    """Return ``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def control_pair() -> tuple[socket.socket, socket.socket]:
    """Return ``(master_end, worker_end)`` of a new control channel (runs in the master, before fork)."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return master_end, worker_end
