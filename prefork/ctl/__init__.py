"""The operator's control socket (``prefork ctl``): a unix socket next to the pid file.

Two halves share this module:

- :class:`ControlServer` runs in the master. It listens on ``<pid_file>.ctl`` (mode 0600, peers of
  another uid refused with SO_PEERCRED), reads :mod:`prefork.control` frames from every connection
  through the master's own loop (``server.add_io_handler``), and answers each request with one reply.
- :func:`call` and :func:`ctl_main` run in the operator's process (``prefork ctl --pid FILE status``).

Commands are a small registry (:data:`COMMANDS`), each with one line of help; an unknown command's
error reply lists them. Nothing a client sends can crash the master or grow its memory without bound:
frames are limited to :data:`MAX_REQUEST`, connections to ``max_connections``; replies are written
when the client's socket is writable (the master never waits for a client), and a client whose unread
output passes ``max_outgoing`` or does not move for ``send_timeout`` is dropped.
"""

from prefork.ctl.base import (
    MAX_REQUEST,
    BadRequest,
    ControlSocketError,
    CtlError,
    CtlTimeout,
    ErrorReply,
    NoMasterError,
    socket_path,
)
from prefork.ctl.client import call, ctl_main, format_status
from prefork.ctl.commands import COMMANDS, Command, Deferred
from prefork.ctl.server import ControlServer

__all__ = [
    "COMMANDS",
    "BadRequest",
    "Command",
    "ControlServer",
    "ControlSocketError",
    "CtlError",
    "CtlTimeout",
    "Deferred",
    "ErrorReply",
    "MAX_REQUEST",
    "NoMasterError",
    "call",
    "ctl_main",
    "format_status",
    "socket_path",
]
