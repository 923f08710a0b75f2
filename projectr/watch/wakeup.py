"""A watcher's fd: readable when events are queued, or when a deadline the watcher armed has passed.

`changed_files()` never waits: while a burst is still arriving (the debounce window) or git holds
its index lock, it arms a deadline and returns; the fd becomes readable when the deadline passes,
so select() on the fd is all a caller ever needs, and nothing sleeps.

- Linux: the fd is an epoll fd over the event source (the inotify fd, or a backend's self-pipe)
  and a timerfd (`os.timerfd_create` on Python 3.13+, else libc through ctypes). No thread.
- Elsewhere (the watchdog and polling backends, which run a thread anyway): a `threading.Timer`
  writes a byte into the backend's self-pipe at the deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import sys
import threading
import time
from typing import Protocol


class Wakeup(Protocol):
    """The fd a watcher hands out, with a one-shot deadline."""

    def fileno(self) -> int: ...
    def arm(self, delay: float) -> None: ...
    def disarm(self) -> None: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


def make_wakeup(source_fd: int, pipe_wfd: int | None = None) -> Wakeup:
    """An epoll + timerfd wakeup on Linux; else a timer thread writing into the backend's pipe."""
    try:
        return EpollWakeup(source_fd)
    except (AttributeError, OSError):  # no epoll or no timerfd here
        if pipe_wfd is None:
            raise
        return PipeWakeup(source_fd, pipe_wfd)


class EpollWakeup:
    """epoll over the source fd and a timerfd: readable when either is (Linux, no thread)."""

    def __init__(self, source_fd: int) -> None:
        self._epoll = select.epoll()  # AttributeError where there is none
        try:
            self._timer = TimerFd()
        except BaseException:
            self._epoll.close()
            raise
        self._epoll.register(source_fd, select.EPOLLIN)
        self._epoll.register(self._timer.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def arm(self, delay: float) -> None:
        """Make the fd readable `delay` seconds from now (replaces an earlier deadline)."""
        self._timer.set(delay)

    def disarm(self) -> None:
        self._timer.set(None)

    def clear(self) -> None:
        """Consume an expired deadline, so that only new events make the fd readable."""
        self._timer.consume()

    def close(self) -> None:
        """Close our fds only (never unregister: after a fork, the epoll instance is the parent's too)."""
        self._epoll.close()
        self._timer.close()


class PipeWakeup:
    """A timer thread writes a byte into the backend's self-pipe at the deadline (no epoll here)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd, self._wfd = rfd, wfd
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def fileno(self) -> int:
        return self._rfd

    def arm(self, delay: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._closed:
                return
            self._timer = threading.Timer(max(delay, 0.0), self._ring)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def clear(self) -> None:
        pass  # the backend drains its pipe

    def close(self) -> None:
        with self._lock:  # after this, _ring never writes: the fd number may be reused
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _ring(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):  # full: readable already
                    os.write(self._wfd, b"t")


class TimerFd:
    """A non-blocking, close-on-exec CLOCK_MONOTONIC timerfd."""

    def __init__(self) -> None:
        self._fd: int
        if sys.version_info >= (3, 13) and hasattr(os, "timerfd_create"):  # Python 3.13+ (on Linux)
            self._fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        else:
            self._fd = _libc_timerfd_create()

    def fileno(self) -> int:
        return self._fd

    def set(self, delay: float | None) -> None:
        """Expire once, `delay` seconds from now; None disarms."""
        value = 0.0 if delay is None else max(delay, 1e-9)  # 0 would disarm
        if hasattr(os, "timerfd_settime"):
            os.timerfd_settime(self._fd, initial=value)
        else:
            _libc_timerfd_settime(self._fd, value)

    def consume(self) -> bool:
        """Read the expiration count; True if the timer had expired."""
        try:
            return bool(os.read(self._fd, 8))
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self._fd)


# ---- timerfd through libc, for Python < 3.13 ------------------------------------------------------


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]  # time_t is a long on Linux


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        libc.timerfd_settime.restype = ctypes.c_int
        _LIBC = libc
    return _LIBC


def _libc_timerfd_create() -> int:
    # TFD_NONBLOCK and TFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC by definition
    fd: int = _libc().timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _libc_timerfd_settime(fd: int, value: float) -> None:
    seconds = int(value)
    nanoseconds = int((value - seconds) * 1e9)
    if value > 0 and not (seconds or nanoseconds):
        nanoseconds = 1  # all zero would disarm
    spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, nanoseconds))
    if _libc().timerfd_settime(fd, 0, ctypes.byref(spec), None) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
