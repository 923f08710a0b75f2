"""The fork-request protocol between the master, the base and the generations, in one place.

The process tree (Linux)::

    master        the loop, sockets, slots, watcher; no app code
      base        forked by the master; imports the app's third-party modules, never a project module
      generation  forked by the base; imports the project and resolves the app
      workers     forked by their generation

Every process below the base is forked by a process ("zygote", the base or a generation) but is
the master's child: the master reaps and supervises every worker and generation exactly as if it
had forked them itself. A single-threaded zygote forks it as its own sibling (clone(2) with
CLONE_PARENT); one that runs threads *double-forks* it (the intermediate child forks the real
child and exits at once, and the master, ``PR_SET_CHILD_SUBREAPER``, adopts the orphan).

Channels are ``SOCK_SEQPACKET`` socketpairs: one message is one frame of :mod:`prefork.control`
(4-byte length + a JSON object), and file descriptors (a slot's listening socket, a worker's
control socket, a new generation's channel) travel with a message as ``SCM_RIGHTS``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

from prefork.control import FrameError, FrameReader, encode_frame

log = logging.getLogger("prefork")

MAX_MESSAGE = 4 * 1024 * 1024  # a generation's report lists every module it imported
MAX_FDS = 8
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


class ChannelClosed(Exception):
    """The other end of a channel is gone (EOF)."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A new (parent_end, child_end) channel; both ends close on exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any], fds: Iterable[int] = ()) -> None:
    """Send one message (and ``fds``) on a channel (any process)."""
    fds = list(fds)
    if fds:
        socket.send_fds(sock, [encode_frame(message)], fds)
    else:
        sock.sendall(encode_frame(message))


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive one message and the fds that came with it; ChannelClosed on EOF (any process).

    Blocking or not, as the socket is; a non-blocking socket with nothing to read raises
    BlockingIOError.
    """
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        raise ChannelClosed()
    reader = FrameReader(max_frame=MAX_MESSAGE)
    messages = list(reader.feed(data))
    if len(messages) != 1:
        for fd in fds:
            os.close(fd)
        raise FrameError(f"expected one message per packet, got {len(messages)}")
    return messages[0], list(fds)


def serve_requests(channel: socket.socket, handlers: dict[str, Callable[[dict[str, Any], list[int]], None]]) -> None:
    """Run ``handlers[command](args, fds)`` for each request until EOF or ``exit`` (base, generation).

    The fds of a request nobody handles are closed: they must not leak into later forks.
    """
    while True:
        try:
            message, fds = receive(channel)
        except ChannelClosed:
            return
        command = message.get("command")
        if command == "exit":
            close_fds(fds)
            return
        handler = handlers.get(str(command))
        if handler is None:
            close_fds(fds)
            continue
        handler(message.get("args") or {}, fds)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """True where the process tree can be built (Linux: subreaper and parent-death signals)."""
    return sys.platform.startswith("linux")


def become_subreaper() -> None:
    """Make this process (the master) adopt every orphaned descendant, so it can reap workers."""
    if _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def die_with_parent(signum: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False elsewhere."""
    if not supported():
        return False
    try:
        return bool(_libc().prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


_intermediates: set[int] = set()  # in a zygote: intermediate processes not reaped yet


def spawn_adopted(master_pid: int, report: Callable[[int | None, str | None], None] | None = None) -> bool:
    """Fork a process the master supervises: True in the new process, False at once in the zygote.

    Runs in a zygote (the base or a generation, a child of the master). Where it is safe, the new
    process is forked as the zygote's sibling (:func:`_clone_sibling`): a child of the master
    from its first instant, and the zygote calls ``report(pid, None)``. Otherwise it is
    double-forked: the intermediate child forks it, calls ``report(pid, None)`` itself
    (``report(None, error)`` if that fork failed) and exits, and the master, the nearest
    subreaper, adopts it; the zygote goes back to its next request right after its own fork, so
    the workers of a roll are forked side by side, and reaps the intermediate processes later
    (tearing down a copy of a large process takes milliseconds).
    Either way the new process calls ``adopted()`` before it reports to the master, and until
    then a parent-death signal it handles itself ends it if the master dies (an import that
    hangs must not outlive the master). An OSError here means not even the first fork succeeded.
    """
    _reap_intermediates()
    if os.getppid() == master_pid:
        sibling = _clone_sibling()
        if sibling == 0:
            _watch_parents(None, master_pid)
            return True
        if sibling is not None:
            if report is not None:
                report(sibling, None)
            return False
    middle = os.fork()
    if middle == 0:  # the intermediate process: fork, report, exit
        me = os.getpid()
        try:
            try:
                child = os.fork()
            except OSError as exc:
                if report is not None:
                    report(None, str(exc))
                child = -1
            if child == 0:
                _watch_parents(me, master_pid)
                return True
            if child > 0 and report is not None:
                report(child, None)
        finally:
            if os.getpid() == me:
                os._exit(0)
    _intermediates.add(middle)
    return False


CLONE_PARENT = 0x00008000
# clone(2)'s number on Linux where its first two arguments are (flags, new stack), as for fork-like use;
# the fork steps around it are CPython's C API
_SYS_CLONE = (
    {"x86_64": 56, "aarch64": 220}.get(platform.machine())
    if sys.platform.startswith("linux") and platform.python_implementation() == "CPython"
    else None
)


def _clone_sibling() -> int | None:
    """Fork a child of this process's parent, like os.fork() otherwise; None where not safe here.

    clone(2) with CLONE_PARENT: CPython's own before- and after-fork steps run as in os.fork(),
    and the child's parent is the master from its first instant, so no intermediate process is
    forked, torn down and reaped (3-5 ms less for each worker and generation of a large app).
    Only in a process with a single thread (no C library's thread either): glibc's fork() also
    holds its internal locks (malloc's) across the fork and runs pthread_atfork handlers, which
    the system call alone does not; with one thread no such lock can be held by another, and the
    libraries that register handlers (thread pools) are the ones that start threads.
    """
    if _SYS_CLONE is None or not _single_threaded():
        return None
    python = ctypes.pythonapi
    python.PyOS_BeforeFork()
    pid = _libc_holding_gil().syscall(_SYS_CLONE, CLONE_PARENT | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        python.PyOS_AfterFork_Child()
        return 0
    python.PyOS_AfterFork_Parent()
    return int(pid) if pid > 0 else None  # refused (a seccomp filter, say): the double fork


def _single_threaded() -> bool:
    """True when this process has exactly one thread (Linux: the entries of /proc/self/task)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _libc_holding_gil() -> Any:
    """libc, called with the GIL held (a forked child must not find the GIL released by a thread it lacks)."""
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _reap_intermediates() -> None:
    """Reap the intermediate processes of earlier double forks that have exited (zygote).

    Only those: a child the app started at import time is the app's to wait for.
    """
    for pid in list(_intermediates):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _intermediates.discard(pid)


def adopted(master_pid: int, signum: int = signal.SIGKILL) -> bool:
    """Die by ``signum`` with the master from now on, or from adoption on; False when the master is gone.

    A double-forked process calls this when it is about to report. Its intermediate parent may
    still be tearing itself down (milliseconds, for a copy of a large process): then nothing
    waits for it. The parent-death signal armed at the fork (PARENT_GONE, handled) arrives when
    the intermediate exits, and its handler switches to ``signum``, which then watches the master.
    """
    global _adopted_signal
    _adopted_signal = signum  # first: a PARENT_GONE from here on upgrades (see _parent_gone)
    if _intermediate is not None and os.getppid() == _intermediate:
        return True  # not adopted yet; PARENT_GONE ends us if the master is gone by then
    die_with_parent(signum)
    return os.getppid() == master_pid


_intermediate: int | None = None  # in a double-forked process: the pid of the parent that forked it (else None)
_master: int | None = None  # ... and the master that adopts it
# The parent-death signal of a double-forked process until adopted(): delivered when the
# intermediate parent exits (harmless: the master adopts us) and again if the master dies.
PARENT_GONE = signal.SIGRTMIN
_adopted_signal: int | None = None  # set by adopted(): the parent-death signal once the master adopts us


def _watch_parents(intermediate: int | None, master_pid: int) -> None:
    """In a new process: remember who forked it (None: the master did), and die with the master from now on."""
    global _intermediate, _master, _adopted_signal
    _intermediate, _master, _adopted_signal = intermediate, master_pid, None  # not the zygote's
    _intermediates.clear()  # the zygote's, not ours
    if not supported():
        return
    signal.signal(PARENT_GONE, _parent_gone)
    die_with_parent(PARENT_GONE)
    if os.getppid() not in (intermediate, master_pid):  # both gone before the signal was armed
        os._exit(1)


def _parent_gone(signum: int, frame: Any) -> None:
    """PARENT_GONE: the intermediate exited (the master adopts us) or the master died (we go too).

    Once adopted() has been called, the master's death is signalled by the signal it asked for
    from now on (SIGKILL is delivered even to a process stuck outside Python's bytecode loop).
    """
    if os.getppid() != _master:
        os._exit(1)
    if _adopted_signal is not None:
        die_with_parent(_adopted_signal)


def close_inherited(keep: Iterable[int]) -> None:
    """Close every fd of this new process except ``keep``, stdio and the logging handlers' files.

    Runs in the base, right after it is forked from the master: whatever the master holds (the
    selector, the watcher's fds, listening sockets, worker channels, the pid file lock) must not
    live on in the base, its generations and their workers. The Python objects that wrapped
    those fds stay referenced by the server object and are never used or collected here.
    """
    keep = {0, 1, 2, *keep, *_logging_fds()}
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())


def _logging_fds() -> set[int]:
    """File descriptors of the streams logging handlers write to (kept open in the base)."""
    fds = set()
    for handler in list(logging.getLogger().handlers) + [
        h for lg in logging.Logger.manager.loggerDict.values() for h in getattr(lg, "handlers", [])
    ]:
        stream = getattr(handler, "stream", None)
        try:
            fds.add(stream.fileno())  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - no stream, or not a file: nothing to keep
            continue
    return fds


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def close_fds(fds: Iterable[int]) -> None:
    """Close each fd, ignoring those already closed (in a new child, on its parent's fds)."""
    for fd in set(fds):
        try:
            os.close(fd)
        except OSError:
            pass


def ignore_terminal_signals() -> None:
    """Base and generations leave INT/QUIT/HUP/TTIN/TTOU/USR1/USR2/WINCH to the master.

    Ctrl-C in a terminal signals the whole process group; only the master decides what a
    signal means, and it stops its helpers itself.
    """
    from prefork import signals

    signals.reset_in_child()
    for name in ("SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGUSR2", "SIGWINCH"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
