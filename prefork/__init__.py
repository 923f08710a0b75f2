"""prefork: a preforking master with waitress workers, a command protocol, and reloads that drop nothing."""

from prefork.pidfile import PidFileError
from prefork.server import Server
from prefork.sockets import BindError
from prefork.worker import CommandError, CommandTimeout, Worker, WorkerGone

__all__ = ["Server", "Worker", "CommandError", "CommandTimeout", "WorkerGone", "PidFileError", "BindError"]


def __getattr__(name: str) -> str:
    """`prefork.__version__`: the installed distribution's version (pyproject.toml holds the one copy)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            value = version("projectr-prefork")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
