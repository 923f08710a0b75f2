"""Slot bookkeeping for the master: stable indexes, boot backoff, what to spawn when.

Pure logic (no processes, no sockets): the Server feeds it facts and asks what to do, so it is
unit-tested with fakes and a fake clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

BACKOFF_BASE = 0.1  # seconds before the first retry of a worker that died before it was ready
BACKOFF_CAP = 5.0  # never wait longer than this between boot attempts


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before the next boot after ``failures`` consecutive boot failures."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** (failures - 1)))


@dataclass(eq=False)
class Slot:
    """One numbered place for a worker; owns port ``port`` and its listening socket."""

    index: int
    port: int
    sock: socket.socket | None
    current: Any = None  # the worker serving (or booting) in this slot
    successor: Any = None  # the worker that will replace ``current`` when a roll completes
    failures: int = 0  # consecutive boot failures
    not_before: float = 0.0  # do not spawn before this monotonic time (backoff, slow start)
    retired: bool = False  # removed by a shrink: spawn nothing, close when empty

    def live_workers(self) -> list[Any]:
        """The workers this slot holds: ``current`` and ``successor``.

        Predecessors that are still draining are not held by the slot (the master finds them by
        index among its live processes before it drops a retired slot).
        """
        return [w for w in (self.current, self.successor) if w is not None]


class SlotTable:
    """The master's slots, indexed 0..n-1."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.slots: dict[int, Slot] = {}
        self.target = 0

    def __iter__(self) -> Iterator[Slot]:
        return iter(sorted(self.slots.values(), key=lambda slot: slot.index))

    def add(self, slot: Slot) -> None:
        """Add a slot (its index must be free)."""
        self.slots[slot.index] = slot

    def active(self) -> list[Slot]:
        """Slots that should have a worker, by index."""
        return [slot for slot in self if not slot.retired]

    def missing_indexes(self) -> list[int]:
        """Indexes below the target that have no slot yet (a grow)."""
        return [index for index in range(self.target) if index not in self.slots]

    def surplus(self) -> list[Slot]:
        """Active slots at or above the target (a shrink)."""
        return [slot for slot in self.active() if slot.index >= self.target]

    def due(self, blocked: Callable[[Slot], bool] = lambda slot: False) -> list[Slot]:
        """Active slots with no worker whose backoff has expired and that ``blocked`` does not hold."""
        now = self.clock()
        return [
            slot
            for slot in self.active()
            if slot.current is None and slot.successor is None and slot.not_before <= now and not blocked(slot)
        ]

    def next_deadline(self) -> float | None:
        """The earliest time an empty active slot may spawn, or None."""
        waiting = [slot.not_before for slot in self.active() if slot.current is None and slot.successor is None]
        return min(waiting) if waiting else None

    def boot_failed(self, slot: Slot) -> float:
        """Record a death before ready; return the backoff delay now applied to the slot."""
        slot.failures += 1
        delay = backoff_delay(slot.failures)
        slot.not_before = self.clock() + delay
        return delay

    def ready(self, slot: Slot) -> None:
        """A worker of this slot became ready: its boot-failure streak is over."""
        slot.failures = 0

    def died_after_ready(self, slot: Slot) -> None:
        """A serving worker died: replace it at once."""
        slot.not_before = self.clock()

    def empty_retired(self) -> list[Slot]:
        """Retired slots with no live worker left: ready to be dropped."""
        return [slot for slot in self if slot.retired and not slot.live_workers()]

    def remove(self, slot: Slot) -> None:
        """Forget a slot."""
        self.slots.pop(slot.index, None)
