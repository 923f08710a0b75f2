"""Coalesce a burst of events: a batch is ready once no event arrived for a short window.

`Burst` is the window as state, not as a wait: the watcher extends it when it reads events and,
while it is open, returns nothing and arms its fd to become readable when the window ends (see
wakeup.py), so `changed_files()` never blocks. `settle()` is the older blocking form, kept for
callers that want to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WINDOW = 0.005  # seconds of quiet that end a burst
DEFAULT_LIMIT = 0.05  # a burst never delays the batch longer than this


@dataclass
class Burst:
    """A debounce window: open from the first event read until `window` s pass with no new event,
    or `limit` s after the first event, whichever is earlier."""

    window: float = DEFAULT_WINDOW
    limit: float = DEFAULT_LIMIT
    started: float | None = None
    deadline: float = 0.0

    def extend(self, now: float) -> None:
        """Events were read at `now` (time.monotonic()): the burst goes on."""
        if self.window <= 0:
            return
        if self.started is None:
            self.started = now
        self.deadline = min(now + self.window, self.started + self.limit)

    def remaining(self, now: float) -> float:
        """Seconds until the burst is over (<= 0: the batch is ready)."""
        return 0.0 if self.started is None else self.deadline - now

    def reset(self) -> None:
        """The batch was handed out: the next event starts a new burst."""
        self.started = None


def settle(
    wait_for_more: Callable[[float], bool], window: float = DEFAULT_WINDOW, limit: float = DEFAULT_LIMIT
) -> None:
    """Call `wait_for_more(timeout)` until it reports no new events for `window` s, or `limit` s passed.

    `wait_for_more` waits on the event source (never a sleep) and returns True if anything arrived.
    Blocking; the watchers use `Burst` instead.
    """
    if window <= 0:
        return
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not wait_for_more(min(window, remaining)):
            return
