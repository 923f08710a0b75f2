"""Master timers: a heap of deadlines the loop waits for (no fixed-interval polling)."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class TimerHandle:
    """A scheduled callback; ``cancel()`` it to drop it."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (a no-op once it ran)."""
        self.cancelled = True


class TimerQueue:
    """Callbacks due at monotonic times; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Schedule ``callback`` in ``delay`` seconds."""
        handle = TimerHandle(self.clock() + max(0.0, delay), callback)
        heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        return handle

    def next_deadline(self) -> float | None:
        """The monotonic time of the earliest live timer, or None."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self) -> list[TimerHandle]:
        """Remove and return the timers that are due now, earliest first."""
        now = self.clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            handle = heapq.heappop(self._heap)[2]
            if not handle.cancelled:
                handle.cancelled = True  # a handle runs at most once
                due.append(handle)
        return due

    def __len__(self) -> int:
        return sum(1 for _, _, handle in self._heap if not handle.cancelled)
