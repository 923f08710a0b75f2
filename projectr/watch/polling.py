"""Polling backend (network file systems, last resort): a THREAD stats the files every `interval` s.

Default interval: 0.5 s (POLL_INTERVAL); cost is one stat per file per interval, plus a hash of files
modified in the last two seconds (so same-size same-second edits are seen). Runs a thread in the
process; a self-pipe makes fileno() selectable.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, NamedTuple

from .. import changes
from . import gitlock
from .base import ThreadedWatcher
from .filters import WatchSet

if TYPE_CHECKING:
    from ..project import Project

POLL_INTERVAL = 0.5


class _Stat(NamedTuple):
    mtime_ns: int
    size: int
    inode: int
    digest: bytes | None  # only for recently modified (racy) files


class PollingWatcher(ThreadedWatcher):
    """Stat every known file each `interval` seconds in a thread; report differences."""

    def __init__(self, project: Project, interval: float = POLL_INTERVAL, **options: object) -> None:
        super().__init__(project, **options)
        self._interval = interval
        self._stop = threading.Event()
        self._seen = self._scan(self._set)
        self._was_locked = gitlock.is_locked(self._set.git_dir)
        self._thread = threading.Thread(target=self._run, name="projectr-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The polling thread."""
        while not self._stop.wait(self._interval):
            self._poll()

    def _poll(self) -> None:
        ws = self._set
        current = self._scan(ws)
        changed = {
            p
            for p in current.keys() | self._seen.keys()
            if _differs(self._seen.get(p), current.get(p)) and ws.matches(p)
        }
        self._seen = current
        locked = gitlock.is_locked(ws.git_dir)
        released = self._was_locked and not locked
        self._was_locked = locked
        self._deliver(changed, wake_anyway=released)

    @staticmethod
    def _scan(ws: WatchSet) -> dict[str, _Stat]:
        import glob

        paths = set(ws.files)
        for pattern in ws.patterns:
            paths.update(p for p in glob.glob(pattern) if ws.accept(p))
        out = {}
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            digest = None
            if changes.Snapshot(st.st_mtime_ns, st.st_size, st.st_ino, b"", _now_ns()).racy:
                try:
                    digest = changes.read(path)[1].digest
                except OSError:
                    continue
            out[path] = _Stat(st.st_mtime_ns, st.st_size, st.st_ino, digest)
        return out

    def _apply(self, ws: WatchSet) -> None:
        pass  # the thread reads self._set on each pass

    def _close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._close_pipe()


def _now_ns() -> int:
    import time

    return time.time_ns()


def _differs(old: _Stat | None, new: _Stat | None) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    if old[:3] != new[:3]:
        return True
    return old.digest is not None and new.digest is not None and old.digest != new.digest
