"""Signals for the master: handlers only record, a wakeup pipe wakes the loop.

The unicorn/gunicorn convention (see :data:`SIGNAL_EVENTS`). Handlers are installed only where the
process has no Python handler of the user's (default or ignored), so a handler the user set before
``start()`` wins. SIGCHLD is the exception: the master always owns it (an inherited SIG_IGN would let
the kernel reap the workers behind the master's back).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

# signal -> (event name, *args) posted to the master loop.
SIGNAL_EVENTS: dict[int, tuple[Any, ...]] = {
    signal.SIGTERM: ("stop", False),
    signal.SIGINT: ("stop", False),
    signal.SIGQUIT: ("stop", True),
    signal.SIGHUP: ("reload",),
    signal.SIGTTIN: ("add_workers", 1),
    signal.SIGTTOU: ("add_workers", -1),
    signal.SIGUSR1: ("reopen_logs",),
    signal.SIGUSR2: ("reload_full",),
}


def is_default(signum: int) -> bool:
    """Return True when ``signum`` has no handler of the user's: default, Python's, or ignored.

    An inherited SIG_IGN counts as no handler: a shell starts background jobs (``prefork app &``)
    with INT and QUIT ignored, and ``nohup`` ignores HUP; the operator still expects them to work.
    """
    current = signal.getsignal(signum)
    return current in (signal.SIG_DFL, signal.SIG_IGN, None) or current is signal.default_int_handler


class WakeupPipe:
    """A non-blocking pipe: writing a byte wakes a selector waiting on ``fileno()``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def fileno(self) -> int:
        """The read end, for the selector."""
        return self.read_fd

    def wake(self) -> None:
        """Make the read end readable; safe in signal handlers (never blocks, never raises)."""
        try:
            os.write(self.write_fd, b"\0")
        except OSError:  # pipe full: the loop is already going to wake
            pass

    def drain(self) -> bytes:
        """Read and return everything written so far."""
        chunks = []
        while True:
            try:
                data = os.read(self.read_fd, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        """Close both ends (once: a second call must not close reused descriptor numbers)."""
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.read_fd = self.write_fd = -1


class SignalRouter:
    """Install recording handlers and ``set_wakeup_fd`` in the master; restore everything after.

    ``received`` holds the signal numbers in arrival order; the loop pops them. Only the main thread
    may install signal handlers: elsewhere ``install`` does nothing and returns False.
    """

    def __init__(self, pipe: WakeupPipe) -> None:
        self.pipe = pipe
        self.received: deque[int] = deque()
        self._previous: dict[int, Any] = {}
        self._previous_wakeup: int | None = None

    def _record(self, signum: int, frame: Any) -> None:
        """The handler: record only (the wakeup fd already woke the loop)."""
        self.received.append(signum)

    def install(self, signals: list[int], wake_on: Sequence[int] = ()) -> bool:
        """Record ``signals`` where their handler is the default; wake the loop on ``wake_on`` too.

        ``wake_on`` (SIGCHLD) is taken over whatever its disposition was: the master must own it.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous_wakeup = signal.set_wakeup_fd(self.pipe.write_fd, warn_on_full_buffer=False)
        for signum in signals:
            if is_default(signum):
                self._previous[signum] = signal.signal(signum, self._record)
        for signum in wake_on:
            # Owned whatever was inherited: SIGCHLD set to SIG_IGN (a parent's choice that survives
            # exec) makes the kernel reap the children itself, waitpid() then fails with ECHILD and
            # dead workers are never replaced; a handler of the user's that calls waitpid() would
            # steal their statuses. A no-op Python handler is enough: the C handler writes to the
            # wakeup fd. restore() puts the previous disposition back.
            self._previous[signum] = signal.signal(signum, _ignore)
        return True

    def restore(self) -> None:
        """Put back the handlers and wakeup fd that were there before ``install``."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._previous_wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._previous_wakeup = None


def _ignore(signum: int, frame: Any) -> None:
    """A handler that does nothing but lets the wakeup fd fire (used for SIGCHLD)."""


# Signals blocked around fork(): the child inherits the master's Python handlers, and a signal
# caught by one before reset_in_child() (a TERM sent to a worker that is still booting) would be
# swallowed. Blocked, it stays pending until the child has default handlers, then acts.
FORK_BLOCKED = frozenset({*SIGNAL_EVENTS, signal.SIGCHLD, signal.SIGUSR2, signal.SIGWINCH})


class blocked_for_fork:
    """``with blocked_for_fork(): pid = os.fork()``: the parent's mask is restored on exit (master);
    the child unblocks in reset_in_child() (worker)."""

    def __enter__(self) -> blocked_for_fork:
        self.parent = os.getpid()
        self.previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        return self

    def __exit__(self, *exc: Any) -> None:
        if os.getpid() == self.parent:  # the child leaves the block too: it stays blocked
            signal.pthread_sigmask(signal.SIG_SETMASK, self.previous)


# What a worker ignores: the master's signals. A terminal (Ctrl-C, Ctrl-\, a hangup) and systemd's
# default KillMode=control-group send them to every process of the group; the master then stops or
# reloads the workers itself. (A worker killed by that QUIT would cut the requests a graceful stop
# promises to finish, and TTIN/TTOU would freeze it.) TERM stays the default: stop now.
LEFT_TO_MASTER = frozenset(
    {
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGWINCH,
    }
)


def reset_in_child(ignore: frozenset[int] = frozenset()) -> None:
    """Give a freshly forked process default handlers (``ignore``: SIG_IGN) and no wakeup fd.

    Signals that arrived since the fork were held pending (blocked_for_fork) and act now, with
    these handlers. Workers pass ``ignore=LEFT_TO_MASTER``.
    """
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: nothing was set here
        pass
    for signum in (*SIGNAL_EVENTS, signal.SIGCHLD, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_IGN if signum in ignore else signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python's own default: EPIPE instead of death
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED)
