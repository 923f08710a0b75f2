"""The watcher interface and the bookkeeping every backend shares."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from . import gitlock
from .debounce import DEFAULT_LIMIT, DEFAULT_WINDOW, Burst
from .filters import DefaultFilter, WatchSet
from .wakeup import Wakeup, make_wakeup

if TYPE_CHECKING:
    from ..project import Project

log = logging.getLogger("projectr.watch")

# While changes are held for git's index lock, look at the lock at least this often: its removal
# normally wakes the fd by itself (an event in .git), this covers a .git the backend cannot watch.
LOCK_RECHECK = 1.0


@runtime_checkable
class Watcher(Protocol):
    """What every backend offers: a selectable fd, a non-blocking batch of changes, close()."""

    def fileno(self) -> int: ...
    def changed_files(self) -> list[str]: ...
    def close(self) -> None: ...


def watch_set(project: Project, accept: DefaultFilter | None = None) -> WatchSet:
    """Describe what to watch for `project`: sources, resources, definition file, git dir."""
    files = list(project.source_files) + project.resource_files
    if project.definition_file:
        files.append(project.definition_file)
    rank = {path: i for i, path in enumerate(files)}
    return WatchSet(
        frozenset(files),
        tuple(project.resource_patterns),
        rank,
        gitlock.find_git_dir(project.root),
        accept or DefaultFilter(),
    )


class BaseWatcher:
    """Shared logic: pending set, debounce window, git-lock hold, refresh after the project's
    declarations change, and the wakeup fd that makes the window's end and the lock's staleness
    wake select().

    Subclasses set `_wakeup` (over their event fd) and implement `_collect()` (move new events into
    `_pending` without waiting; True if that added anything), `_apply(watch_set)` (start watching
    new folders) and `_close()`.
    """

    def __init__(
        self,
        project: Project,
        debounce: float = DEFAULT_WINDOW,
        debounce_limit: float = DEFAULT_LIMIT,
        accept: DefaultFilter | None = None,
    ) -> None:
        self._project = project
        self._accept = accept
        self._set = watch_set(project, accept)
        self._version = project._version
        self._pending: set[str] = set()
        self._burst = Burst(debounce, debounce_limit)
        self._wakeup: Wakeup | None = None
        self._closed = False

    def fileno(self) -> int:
        assert self._wakeup is not None
        return self._wakeup.fileno()

    def changed_files(self) -> list[str]:
        """Return the project files changed since the last call (each once, project order); never blocks.

        Returns [] while a burst is still arriving (the debounce window) or while git holds
        `.git/index.lock`; the fd becomes readable again when the window ends, when the lock goes
        (or goes stale), so waiting on the fd and calling again never misses a change.
        """
        assert self._wakeup is not None
        self._refresh()
        self._wakeup.clear()
        if self._collect():
            self._burst.extend(time.monotonic())
        if not self._pending:
            self._burst.reset()
            self._wakeup.disarm()
            return []
        wait = self._burst.remaining(time.monotonic())
        if wait > 0 and not self._saves_complete():
            self._wakeup.arm(wait)
            return []
        held = gitlock.held_for(self._set.git_dir)
        if held is not None:
            log.debug("holding %d change(s) while git holds index.lock", len(self._pending))
            self._wakeup.arm(min(held + 0.01, LOCK_RECHECK))  # +10 ms: stale for sure when we wake
            return []
        batch = self._set.ordered(self._pending)
        self._pending.clear()
        self._burst_over()
        self._burst.reset()
        self._wakeup.disarm()
        return batch

    def close(self) -> None:
        """Stop watching and release the fds (and thread, for watchdog/polling)."""
        if not self._closed:
            self._closed = True
            self._project._watchers.discard(self)
            if self._wakeup is not None:
                self._wakeup.close()
            self._close()

    def load_hints_begin(self) -> set[str] | None:
        """Called by load(): the files that may have changed since the last load, or None if unknown.

        Only a backend whose events are queued synchronously with the write (inotify) can vouch
        that nothing else changed; the others return None and load() stats every file.
        """
        return None

    def load_hints_abort(self, taken: set[str] | None) -> None:
        """Called when the load that took `taken` failed: those files stay candidates."""

    def __enter__(self) -> BaseWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self) -> None:
        """Pick up files added by a re-read of the definition file (or new resource files)."""
        if self._project._version != self._version:
            self._version = self._project._version
            self._set = watch_set(self._project, self._accept)
            self._apply(self._set)

    def _collect(self) -> bool:
        raise NotImplementedError

    def _saves_complete(self) -> bool:
        """True when the backend saw every pending file's save end (closed after writing, or renamed
        into place): the burst is over without waiting out the window. The default cannot tell."""
        return False

    def _burst_over(self) -> None:
        """The batch was handed out: forget what the backend tracked about this burst's saves."""

    def _apply(self, ws: WatchSet) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class ThreadedWatcher(BaseWatcher):
    """A backend whose events come from a thread (watchdog's observer, the poller).

    The thread hands paths over with `_deliver()`, which records them under a lock and writes a
    byte to a self-pipe; the watcher's fd wakes on the pipe (and on its deadlines), so select()
    works as with inotify.
    """

    def __init__(self, project: Project, **options: object) -> None:
        super().__init__(project, **options)  # type: ignore[arg-type]
        self._rfd, self._wfd = make_wake_pipe()
        self._wakeup = make_wakeup(self._rfd, self._wfd)
        self._lock = threading.Lock()
        self._incoming: set[str] = set()

    def _deliver(self, paths: set[str] | list[str], wake_anyway: bool = False) -> None:
        """Called in the thread: queue `paths` and wake the fd (also when only a git lock went away)."""
        if paths:
            with self._lock:
                self._incoming.update(paths)
        if paths or wake_anyway:
            wake(self._wfd)

    def _collect(self) -> bool:
        drain_pipe(self._rfd)
        with self._lock:
            incoming, self._incoming = self._incoming, set()
        self._pending.update(incoming)
        return bool(incoming)

    def _close_pipe(self) -> None:
        os.close(self._rfd)
        os.close(self._wfd)


def make_wake_pipe() -> tuple[int, int]:
    """A non-blocking, close-on-exec self-pipe: a thread writes a byte, select() wakes."""
    r, w = os.pipe()
    for fd in (r, w):
        os.set_blocking(fd, False)
    return r, w


def wake(fd: int) -> None:
    """Make the pipe readable (a full pipe is already readable)."""
    with contextlib.suppress(OSError):  # BlockingIOError: full, so readable already
        os.write(fd, b"!")


def drain_pipe(fd: int) -> bool:
    """Read everything in the pipe; True if anything was there."""
    got = False
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return got
        if not data:
            return got
        got = True
