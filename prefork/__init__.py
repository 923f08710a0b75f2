"""prefork: a preforking master with waitress workers, a command protocol, and reloads that drop nothing."""

from prefork.pidfile import PidFileError
from prefork.server import Server
from prefork.sockets import BindError
from prefork.worker import CommandError, CommandTimeout, Worker, WorkerGone

__all__ = ["Server", "Worker", "CommandError", "CommandTimeout", "WorkerGone", "PidFileError", "BindError"]


def __getattr__(name: str) -> str:
    """`prefork.__version__`: the distribution's one version (projectr and prefork ship together)."""
    if name == "__version__":
        import projectr

        value: str = projectr.__version__
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
