"""Rolling replacement of every worker (mixed into Server; runs in the master).

Successors of the next generation fork at once next to their predecessors and accept on the same
sockets; when every one has reported ready the predecessors stop gracefully. A successor that dies
first, or a deadline, abandons the roll: the successors stop and the old generation keeps serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prefork.notify import notify
from prefork.server.state import MasterState
from prefork.server.timers import TimerHandle
from prefork.worker import Worker

log = logging.getLogger("prefork")


@dataclass
class Roll:
    """A rolling replacement in progress: successors of ``generation`` booting next to their predecessors."""

    generation: int
    previous_generation: int
    started: float
    previous_code: int = 0  # the code generation to restore when the roll is abandoned
    successors: dict[int, Worker] = field(default_factory=dict)
    deadline: TimerHandle | None = None


class Rolling(MasterState):
    """Roll state and steps; ``Server`` provides the slots, timers, spawning and retiring."""

    _roll: Roll | None
    _roll_again: bool
    _reload_again: bool
    _reload_again_full: bool
    _deferred_target: int | None

    def roll_workers(self) -> bool:
        """Start replacing every worker with one forked from the current ``self.app`` (master).

        Successors (a new generation) fork at once and in parallel; when every one has reported
        ready, the predecessors are stopped gracefully. If a successor dies first or they are not
        all ready within ``ready_timeout``, the successors are stopped, the old workers keep serving
        and the failure is logged. Either way ``roll_finished(ok, info)`` runs. Called while a roll
        is in progress, it schedules one more roll after it and returns False.
        """
        if self.state != "running":
            log.warning("roll requested while %s: ignored", self.state)
            return False
        if self._roll is not None:
            self._roll_again = True
            return False
        roll = Roll(self.generation + 1, self.generation, time.monotonic(), previous_code=self.code_generation)
        self._roll = roll
        self.generation = roll.generation
        if not self._rolls_onto_the_same_code():
            self.code_generation = roll.generation
        log.debug("rolling to generation %d", roll.generation)
        for slot in self._slots.active():
            if slot.current is not None and not slot.current.ready:
                self._retire(slot.current)  # still booting old code: its successor replaces it
                slot.current = None
            successor = self._spawn(slot)
            if successor is None:
                self._abandon_roll(f"cannot fork a successor for slot {slot.index}")
                return False
            slot.successor = successor
            roll.successors[slot.index] = successor
        roll.deadline = self.call_later(
            self.ready_timeout, lambda: self._abandon_roll(f"successors not ready within {self.ready_timeout:g} s")
        )
        self._check_roll()
        return True

    def roll_finished(self, ok: bool, info: dict[str, Any]) -> None:
        """Called when a roll completed (``ok``) or was abandoned; override to report it (master).

        ``info``: ``generation``, ``replaced`` (workers replaced), ``elapsed`` (seconds),
        ``reason`` (why it was abandoned, or None).
        """
        if ok:
            log.info(
                "generation %d serving: %d workers replaced in %.0f ms",
                info["generation"],
                info["replaced"],
                info["elapsed"] * 1000,
            )
        else:
            log.error(
                "roll to generation %d abandoned: %s; generation %d keeps serving",
                info["generation"],
                info["reason"],
                self.generation,
            )

    def _rolls_onto_the_same_code(self) -> bool:
        """True when the roll starting now serves the code the workers serve (master); overridden."""
        return False

    def handle_roll(self) -> None:
        """Run ``roll_workers()`` (posted when roll requests were coalesced)."""
        self.roll_workers()

    # -- rolls -------------------------------------------------------------------------------------------

    def _check_roll(self) -> None:
        """Complete the roll once every successor is ready."""
        roll = self._roll
        if roll is None or not all(w.ready for w in roll.successors.values()):
            return
        replaced = 0
        for index, successor in roll.successors.items():
            slot = self._slots.slots[index]
            if slot.current is not None:
                self._retire(slot.current)
                replaced += 1
            slot.current, slot.successor = successor, None
            self._slots.ready(slot)
        self._serving_app = self.app
        self._end_roll(True, replaced, None)
        self._maybe_announce()

    def _abandon_roll(self, reason: str) -> None:
        """Give up the roll: stop the successors, restore the serving app and generation."""
        roll = self._roll
        if roll is None:
            return
        for index, successor in roll.successors.items():
            slot = self._slots.slots.get(index)
            if slot is not None and slot.successor is successor:
                slot.successor = None
            if successor.pid in self._by_pid:
                self._retire(successor)
        self.generation, self.code_generation = roll.previous_generation, roll.previous_code
        self.app = self._serving_app
        self._end_roll(False, 0, reason)

    def _end_roll(self, ok: bool, replaced: int, reason: str | None) -> None:
        """Clear the roll, report it, and start what was coalesced meanwhile."""
        roll = self._roll
        assert roll is not None
        if roll.deadline is not None:
            roll.deadline.cancel()
        self._roll = None
        info = {
            "generation": roll.generation,
            "replaced": replaced,
            "elapsed": time.monotonic() - roll.started,
            "reason": reason,
        }
        self._guarded(lambda: self.roll_finished(ok, info), "roll_finished")
        if ok:
            notify("READY=1")
        if self.state != "running":
            return
        if self._deferred_target is not None:
            # Applied now, not posted: a TTIN/TTOU already queued behind this turn's events adds
            # to the target, and must add to the deferred one (two TTINs during a roll are +2).
            target, self._deferred_target = self._deferred_target, None
            self.handle_set_workers(target)
        if self._reload_again:
            full, self._reload_again_full = self._reload_again_full, False
            self._reload_again = self._roll_again = False
            self.post_event("reload_full" if full else "reload")
        elif self._roll_again:
            self._roll_again = False
            self.post_event("roll")
