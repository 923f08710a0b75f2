"""prefork: a preforking master with waitress workers, a command protocol, and reloads that drop nothing."""

from prefork.pidfile import PidFileError
from prefork.server import Server
from prefork.sockets import BindError
from prefork.worker import CommandError, CommandTimeout, Worker, WorkerGone

__all__ = ["Server", "Worker", "CommandError", "CommandTimeout", "WorkerGone", "PidFileError", "BindError"]
