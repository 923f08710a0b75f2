"""Linux backend: one inotify instance, no thread; the watcher's fd is an epoll fd over the inotify
fd and a timerfd (wakeup.py), so the end of a debounce window wakes select() too.

Folders are watched, and events are matched against the exact set of known files, so atomic
rename-over saves, delete+recreate and new files are seen; everything else is drained and dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import TYPE_CHECKING

from inotify_simple import INotify, flags

from .base import BaseWatcher, log
from .filters import WatchSet
from .wakeup import EpollWakeup

if TYPE_CHECKING:
    from ..project import Project

_DIR_MASK = (
    flags.CLOSE_WRITE
    | flags.MODIFY
    | flags.ATTRIB
    | flags.CREATE
    | flags.DELETE
    | flags.MOVED_TO
    | flags.MOVED_FROM
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
    | flags.EXCL_UNLINK
)

# In .git only index.lock's comings and goings matter (git renames the lock over the index).
_GIT_MASK = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.ONLYDIR


class InotifyWatcher(BaseWatcher):
    """Watch the project's folders with one inotify instance."""

    def __init__(self, project: Project, **options: object) -> None:
        super().__init__(project, **options)  # type: ignore[arg-type]
        self._inotify = INotify(nonblocking=True)
        self._wakeup = EpollWakeup(self._inotify.fileno())
        self._wd_dir: dict[int, str] = {}
        self._dir_wd: dict[str, int] = {}
        self._reliable = False
        self._pid = os.getpid()  # a forked child shares the inotify instance: it must not touch it
        # files that may have changed since the last load(); None: unknown (overflow, watch lost, new)
        self._since_load: set[str] | None = None
        # This burst's files being written or gone (a save by rename is a removal, then a creation);
        # None: events were lost, so the burst waits out its window.
        self._unfinished: set[str] | None = set()
        self._apply(self._set)

    def _apply(self, ws: WatchSet) -> None:
        """Watch every folder the set needs (and the git dir, for the lock), stop watching the rest."""
        git_dir = ws.git_dir if ws.git_dir and os.path.isdir(ws.git_dir) else None
        wanted = ws.directories() | ({git_dir} if git_dir else set())
        for d in set(self._dir_wd) - wanted:
            wd = self._dir_wd.pop(d)
            self._wd_dir.pop(wd, None)
            with contextlib.suppress(OSError):  # already gone with its folder
                self._inotify.rm_watch(wd)
        for d in wanted - set(self._dir_wd):
            try:
                wd = self._inotify.add_watch(d, _GIT_MASK if d == git_dir and d not in ws.directories() else _DIR_MASK)
            except OSError as exc:
                log.debug("cannot watch %s: %s", d, exc)
                continue
            self._dir_wd[d] = wd
            self._wd_dir[wd] = d
        self._reliable = all(os.path.dirname(f) in self._dir_wd for f in ws.files)

    def load_hints_begin(self) -> set[str] | None:
        """Hand load() the files seen changing since the last load (None if we cannot vouch).

        The kernel queues an event before the write returns, so a readable fd means unread
        events: then we cannot vouch and load() stats everything.
        """
        if os.getpid() != self._pid:
            return None  # in a forked child (a trial load): changing watches would change the parent's
        self._refresh()
        taken, self._since_load = self._since_load, set()
        if taken is None or not self._reliable or select.select([self._inotify.fileno()], [], [], 0)[0]:
            return None
        return taken

    def load_hints_abort(self, taken: set[str] | None) -> None:
        if taken is None or self._since_load is None:
            self._since_load = None
        else:
            self._since_load |= taken

    def _collect(self) -> bool:
        """Read what is queued, never waiting; True if it concerns the project."""
        events = self._inotify.read(timeout=0)
        lost = relevant = False
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                self._pending.update(self._set.files)  # events were lost: assume everything changed
                self._since_load = self._unfinished = None
                relevant = True
                continue
            folder = self._wd_dir.get(event.wd)
            if event.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF):
                lost = relevant = True
                self._since_load = self._unfinished = None
                if folder:
                    self._pending.update(p for p in self._set.files if os.path.dirname(p) == folder)
                continue
            if event.mask & flags.ISDIR:
                lost = lost or bool(event.mask & (flags.CREATE | flags.MOVED_TO))  # maybe a folder we want
                continue
            if folder and event.name:
                path = os.path.join(folder, event.name)
                if self._set.matches(path):
                    self._pending.add(path)
                    relevant = True
                    if self._since_load is not None:
                        self._since_load.add(path)
                    self._follow_save(path, event.mask)
        if lost:
            self._forget_dead_watches()
        return relevant

    def _follow_save(self, path: str, mask: int) -> None:
        """Track whether ``path``'s save is over: written and closed, or renamed into place."""
        if self._unfinished is None:
            return
        if mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
            self._unfinished.discard(path)
        elif mask & (flags.CREATE | flags.MODIFY | flags.MOVED_FROM | flags.DELETE):
            self._unfinished.add(path)

    def _saves_complete(self) -> bool:
        return self._unfinished is not None and not self._unfinished

    def _burst_over(self) -> None:
        self._unfinished = set()

    def _forget_dead_watches(self) -> None:
        """A watched folder vanished or moved, or a folder appeared: drop dead watches, add wanted ones."""
        for d, wd in list(self._dir_wd.items()):
            if not os.path.isdir(d):
                del self._dir_wd[d]
                self._wd_dir.pop(wd, None)
        self._apply(self._set)

    def _close(self) -> None:
        self._inotify.close()
