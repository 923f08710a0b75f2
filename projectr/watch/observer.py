"""watchdog backend (macOS, Windows, BSD): watchdog's observer THREAD feeds a self-pipe.

This backend runs a thread in the process; fork only from a process that does not use it
(or close it before forking). Events are matched against the exact set of known files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .base import ThreadedWatcher
from .filters import WatchSet

if TYPE_CHECKING:
    from ..project import Project

# Reading a file is not a change (our own load() opens files): ignore these event types.
_IGNORED_TYPES = {"opened", "closed_no_write"}


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's observer thread: record matching paths, wake the pipe."""

    def __init__(self, watcher: WatchdogWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_TYPES or event.is_directory:
            return
        self._watcher._incoming_event([os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")])


class WatchdogWatcher(ThreadedWatcher):
    """watchdog observer + self-pipe so fileno() is selectable."""

    def __init__(self, project: Project, **options: object) -> None:
        super().__init__(project, **options)
        self._handler = _Handler(self)
        self._watches: dict[str, object] = {}
        self._owner_pid = os.getpid()
        self._observer = Observer()
        self._observer.daemon = True
        self._apply(self._set)
        self._observer.start()

    def _incoming_event(self, paths: list[str]) -> None:
        """Called in the observer thread."""
        ws = self._set
        hits = [p for p in paths if p and ws.matches(p)]
        lock_event = ws.git_dir is not None and any(p == os.path.join(ws.git_dir, "index.lock") for p in paths)
        self._deliver(hits, wake_anyway=lock_event)

    def _apply(self, ws: WatchSet) -> None:
        wanted = ws.directories() | ({ws.git_dir} if ws.git_dir and os.path.isdir(ws.git_dir) else set())
        for d in set(self._watches) - wanted:
            self._observer.unschedule(self._watches.pop(d))  # type: ignore[arg-type]
        for d in wanted - set(self._watches):
            self._watches[d] = self._observer.schedule(self._handler, d, recursive=False)

    def _close(self) -> None:
        if os.getpid() != self._owner_pid:
            # A forked child (a worker) shares the observer's descriptors but has none of its threads:
            # stopping it here would write to the inotify reader's kill pipe, shared with the parent,
            # and leave the parent's reader thread spinning on it. Release our own pipe only.
            self._close_pipe()
            return
        self._observer.stop()
        self._observer.join(timeout=5)
        self._close_pipe()
