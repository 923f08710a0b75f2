"""Coalesce a burst of events: keep reading while more arrive within a short window."""
from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_WINDOW = 0.005   # seconds of quiet that end a burst
DEFAULT_LIMIT = 0.05     # a burst never delays the batch longer than this


def settle(wait_for_more: Callable[[float], bool], window: float = DEFAULT_WINDOW,
           limit: float = DEFAULT_LIMIT) -> None:
    """Call `wait_for_more(timeout)` until it reports no new events for `window` s, or `limit` s passed.

    `wait_for_more` waits on the event source (never a sleep) and returns True if anything arrived.
    Nothing is held back after this returns, so the caller's fd needs no later wake-up.
    """
    if window <= 0:
        return
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not wait_for_more(min(window, remaining)):
            return
