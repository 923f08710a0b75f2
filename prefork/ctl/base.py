"""Limits, errors and the socket path shared by the control socket's server and client."""

from __future__ import annotations

import os
import struct

MAX_REQUEST = 64 * 1024  # an operator's request is a command and a few args; anything larger is refused
MAX_WORKERS = 1024  # `workers N` above this is a typo or an attack, not a fleet
MAX_IN_FLIGHT = 8  # requests per connection waiting for the workers' answers
STATS_TIMEOUT = 2.0  # seconds `status`/`stats` wait for a worker's stats
COMMAND_TIMEOUT = 5.0  # seconds `command` waits for a worker's reply
ACCEPT_PAUSE = 0.5  # seconds the listener rests after accept failed (EMFILE)
# Read per turn of the loop and client: ~350 small requests, so a client that pipelines thousands
# (and perhaps never reads the replies) costs each turn milliseconds, not a burst of work.
_RECV_CHUNK = 16 * 1024
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


class ControlSocketError(CtlError, OSError):
    """The master cannot open its control socket; the message is one line naming the path and why.

    An OSError too, so that whoever reports a failed start's OSErrors in one line (``prefork``'s
    command line does) reports this one the same way, without a traceback.
    """


class BadRequest(Exception):
    """A ctl request the master refuses (unknown command, wrong arguments); runs in the master.

    A command handler raises it, and the client gets an error reply with its message. Not to be
    confused with :class:`prefork.CommandError`, which is a *worker* command that failed.
    """


def socket_path(pid_file: str | os.PathLike[str]) -> str:
    """Return the control socket path that belongs to ``pid_file`` (``<pid_file>.ctl``)."""
    return os.fspath(pid_file) + ".ctl"
