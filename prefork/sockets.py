"""Listening sockets bound by the master, and the per-worker control socketpair.

The master binds every listening socket once, before it forks, and keeps it across generations:
a successor accepts on the socket its predecessor used, so a connection that arrives during a
replacement waits in the backlog instead of being refused.
"""

from __future__ import annotations

import socket


class BindError(OSError):
    """A listening socket could not be bound (port in use, bad address, no permission)."""


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """Bind and listen on ``host:port``; return the socket (runs in the master).

    ``port`` 0 asks the kernel for a free port; read it back with ``sock.getsockname()[1]``.
    Raises BindError naming the address when the bind fails.
    """
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
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {format_address(host, port)}: {exc.strerror}") from exc
    return sock


def bound_port(sock: socket.socket) -> int:
    """Return the port a listening socket is bound to."""
    return int(sock.getsockname()[1])


def format_address(host: str, port: int) -> str:
    """Return ``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def control_pair() -> tuple[socket.socket, socket.socket]:
    """Return ``(master_end, worker_end)`` of a new control channel (runs in the master, before fork)."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return master_end, worker_end
