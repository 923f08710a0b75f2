"""Watch a project's files: inotify (Linux, no thread), watchdog (thread + self-pipe), polling (thread).

`watch(project, backend="auto")` returns a Watcher: `fileno()` for select, `changed_files()`
(non-blocking, coalesced, each path once: [] while a burst is still arriving, and the fd wakes
again when it ends) and `close()`; it is a context manager.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import TYPE_CHECKING, Any

from .base import BaseWatcher, Watcher, watch_set
from .debounce import DEFAULT_LIMIT, DEFAULT_WINDOW, Burst, settle
from .filters import DefaultFilter, WatchSet
from .polling import POLL_INTERVAL

if TYPE_CHECKING:
    from ..project import Project

log = logging.getLogger("projectr.watch")

BACKENDS = ("inotify", "watchdog", "polling")

__all__ = [
    "BACKENDS",
    "BaseWatcher",
    "Burst",
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW",
    "DefaultFilter",
    "POLL_INTERVAL",
    "WatchSet",
    "Watcher",
    "choose_backend",
    "settle",
    "watch",
    "watch_set",
]


def choose_backend(backend: str = "auto") -> str:
    """Resolve "auto": inotify on Linux, else watchdog, else polling."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown watch backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
        return backend
    if sys.platform.startswith("linux") and importlib.util.find_spec("inotify_simple"):
        return "inotify"
    if importlib.util.find_spec("watchdog"):
        return "watchdog"
    return "polling"


def watch(project: Project, backend: str = "auto", **options: Any) -> BaseWatcher:
    """Start watching `project` with the named backend (options: debounce, debounce_limit, interval)."""
    name = choose_backend(backend)
    log.debug("projectr %s: watching with the %s backend (asked for %s)", project.name, name, backend)
    watcher: BaseWatcher
    if name == "inotify":
        from .inotify import InotifyWatcher

        watcher = InotifyWatcher(project, **options)
    elif name == "watchdog":
        from .observer import WatchdogWatcher

        watcher = WatchdogWatcher(project, **options)
    else:
        from .polling import PollingWatcher

        watcher = PollingWatcher(project, **options)
    project._watchers.add(watcher)  # only a fully built watcher may answer load()'s questions
    return watcher
