"""systemd's readiness protocol (sd_notify) without a dependency.

Runs in the master: ``notify("READY=1")`` once every worker serves, ``notify("RELOADING=1")`` when a
reload starts, ``notify("STOPPING=1")`` when shutdown starts. Outside systemd (no ``NOTIFY_SOCKET``)
it does nothing and returns False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("prefork.notify")


def _address(value: str) -> str | bytes:
    """Return the socket address for a NOTIFY_SOCKET value; ``@name`` is Linux's abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) to systemd as one datagram.

    Returns True when the datagram was sent, False when ``NOTIFY_SOCKET`` is not set. A failure to send
    is logged at WARNING and returns False: the service keeps running whatever the supervisor does.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    message = "\n".join(states).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, _address(target))
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", target, exc)
        return False
    return True
