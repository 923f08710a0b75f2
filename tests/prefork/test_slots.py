"""Pure logic of the master: backoff, slot bookkeeping, timers (fake clock, fake workers)."""

from __future__ import annotations

import dataclasses

import pytest

from prefork.server.slots import BACKOFF_CAP, Slot, SlotTable, backoff_delay
from prefork.server.timers import TimerQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    def __init__(self, ready: bool = False) -> None:
        self.ready = ready


def table(count: int, clock: Clock) -> SlotTable:
    slots = SlotTable(clock)
    slots.target = count
    for index in range(count):
        slots.add(Slot(index, 8000 + index, None))
    return slots


def test_backoff_doubles_from_a_tenth_and_is_capped():
    assert [backoff_delay(n) for n in range(0, 9)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_delay(1000) == BACKOFF_CAP


def test_empty_slots_are_due_unless_backing_off():
    clock = Clock()
    slots = table(3, clock)
    assert [s.index for s in slots.due()] == [0, 1, 2]
    slots.slots[0].current = FakeWorker()
    slots.slots[1].successor = FakeWorker()
    assert [s.index for s in slots.due()] == [2]
    assert slots.boot_failed(slots.slots[2]) == 0.1
    assert slots.due() == []
    assert slots.next_deadline() == pytest.approx(100.1)
    clock.now = 100.1
    assert [s.index for s in slots.due()] == [2]


def test_ready_resets_the_failure_streak_and_a_death_after_ready_is_due_at_once():
    clock = Clock()
    slots = table(1, clock)
    slot = slots.slots[0]
    for _ in range(4):
        slots.boot_failed(slot)
    assert slot.failures == 4 and slot.not_before == pytest.approx(100.8)
    slots.ready(slot)
    assert slot.failures == 0
    assert slots.boot_failed(slot) == 0.1  # the next streak starts from the bottom
    slots.died_after_ready(slot)
    assert [s.index for s in slots.due()] == [0]


def test_grow_and_shrink_bookkeeping():
    clock = Clock()
    slots = table(2, clock)
    slots.target = 4
    assert slots.missing_indexes() == [2, 3]
    slots.target = 1
    assert [s.index for s in slots.surplus()] == [1]
    slots.slots[1].retired = True
    assert [s.index for s in slots.active()] == [0]
    assert [s.index for s in slots.due()] == [0]  # a retired slot never spawns
    assert [s.index for s in slots.empty_retired()] == [1]
    slots.slots[1].current = FakeWorker()
    assert slots.empty_retired() == []


def test_timers_run_in_deadline_order_and_cancelled_ones_never_run():
    clock = Clock()
    timers = TimerQueue(clock)
    ran = []
    timers.call_later(2.0, lambda: ran.append("b"))
    timers.call_later(1.0, lambda: ran.append("a"))
    dropped = timers.call_later(1.5, lambda: ran.append("dropped"))
    dropped.cancel()
    assert timers.next_deadline() == 101.0
    assert timers.pop_due() == []
    clock.now = 102.0
    for handle in timers.pop_due():
        handle.callback()
    assert ran == ["a", "b"]
    assert timers.next_deadline() is None and len(timers) == 0


def test_a_timer_handle_runs_at_most_once():
    clock = Clock()
    timers = TimerQueue(clock)
    handle = timers.call_later(0, lambda: None)
    assert timers.pop_due() == [handle]
    assert timers.pop_due() == []


def test_a_slot_holds_only_what_is_assigned():
    # Slot.others ("predecessors still draining") was read by live_workers() but never assigned by
    # the master: a field that looked like bookkeeping and was always empty. It is gone; the master
    # checks its live processes by index before dropping a retired slot.
    assert [f.name for f in dataclasses.fields(Slot)] == [
        "index", "port", "sock", "current", "successor", "failures", "not_before", "retired"]
    slot = Slot(0, 8000, None)
    assert slot.live_workers() == []
    slot.current, slot.successor = FakeWorker(), FakeWorker()
    assert slot.live_workers() == [slot.current, slot.successor]
