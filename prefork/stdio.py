"""Standard streams of the workers, and reopening log files (USR1)."""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

Stream = str | os.PathLike[str] | IO[Any] | Any


def open_stream(stream: Stream | None) -> tuple[int | None, str | None]:
    """Return ``(fd, path)`` for the workers' output: an object with ``fileno()`` or a path (master).

    A path is opened for appending here, once, and reopened on USR1.
    """
    if stream is None:
        return None, None
    if isinstance(stream, (str, os.PathLike)):
        path = os.fspath(stream)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), path
    return stream.fileno(), None


def open_access_log(stream: Stream | None) -> tuple[int | None, str | None]:
    """Return ``(fd, path)`` of the access log the workers write (master).

    The fd is a copy of its own: a worker puts its stdout and stderr on the output stream, and
    the access log must still reach the stream it was given (``-``: the master's stdout).
    """
    fd, path = open_stream(stream)
    if fd is None or path is not None:
        return fd, path
    return os.dup(fd), None


def redirect_stdio(fd: int | None) -> None:
    """Put stdin on /dev/null and stdout/stderr on ``fd`` (runs in the worker, after fork)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if fd is not None:
        os.dup2(fd, 1)
        os.dup2(fd, 2)


def reopen_path(path: str, fd: int | None) -> int:
    """Reopen ``path`` for appending and close the old ``fd``; return the new fd (master)."""
    new_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if fd is not None and fd > 2:
        os.close(fd)
    return new_fd


def reopen_stdio(path: str) -> None:
    """Point stdout/stderr at a fresh open of ``path`` (runs in the worker, on reopen_logs)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def reopen_log_handlers() -> int:
    """Reopen every logging.FileHandler's file (after logrotate moved it); return how many."""
    count = 0
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    seen: set[int] = set()
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
                count += 1
    return count


def flush_all() -> None:
    """Flush logging handlers and Python's stdio buffers (before a fork, or ``os._exit``).

    A fork would otherwise copy unwritten output into the child, and ``os._exit`` skips the
    interpreter's own flush. A broken stream must not stop either.
    """
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - see above
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - see above
            pass
