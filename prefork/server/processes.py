"""Reaping, slots and spawning: the worker processes' lives (mixed into Server; runs in the master).

Reap every dead child with ``waitpid(-1, WNOHANG)``, map it to its slot, and replace it (at once
after a ready worker's death, with backoff after a boot failure); grow and shrink the slots to the
target; fork workers and stop them gracefully or now.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import signal
import socket
import time
from typing import Any

from prefork import signals, stdio
from prefork.notify import notify
from prefork.server.slots import Slot
from prefork.server.state import MasterState
from prefork.sockets import (
    Address,
    BindError,
    bind_listener,
    bind_unix,
    bound_port,
    control_pair,
)
from prefork.worker import SERVED_BY, CommandError, CommandTimeout, Worker, WorkerGone

log = logging.getLogger("prefork")


class Processes(MasterState):
    """Reaping, slot bookkeeping, forking and retiring; ``Server`` provides the loop and hooks."""

    # -- reaping ----------------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect every exited child; dispatch workers' exits and watched helpers' statuses."""
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status = os.waitstatus_to_exitcode(raw)
            watcher = self._child_watchers.pop(pid, None)
            if watcher is not None:
                self._guarded(functools.partial(watcher, status), f"child watcher for pid {pid}")
                continue
            worker = self._by_pid.pop(pid, None)
            if worker is None:
                # Perhaps a worker whose generation has not told us its pid yet: keep the status.
                self._stranger_exits[pid] = status
                while len(self._stranger_exits) > 1024:
                    self._stranger_exits.pop(next(iter(self._stranger_exits)))
                log.debug("reaped pid %d (not a worker), status %d", pid, status)
                continue
            self._worker_gone(worker, status)

    def _adopt_pid(self, worker: Worker, pid: int) -> None:
        """Learn the pid of a worker a generation forked (its reply, or the worker's ready message)."""
        if worker.pid is not None:
            return
        worker.pid = pid
        for request_id, pending in list(self._pending_forks.items()):
            if pending is worker:
                del self._pending_forks[request_id]
        self._by_pid[pid] = worker
        status = self._stranger_exits.pop(pid, None)
        if status is not None:  # it died before we knew it was ours
            del self._by_pid[pid]
            self._worker_gone(worker, status)
        elif worker.stopping:
            self._signal(worker, signal.SIGTERM)

    def _on_worker_message(self, worker: Worker, message: dict[str, Any]) -> None:
        """A ready message carries the pid: adopt it before the ready event is handled."""
        if message.get("event") == "ready" and worker.pid is None and isinstance(message.get("pid"), int):
            self._adopt_pid(worker, message["pid"])
        super()._on_worker_message(worker, message)  # type: ignore[misc]

    def _worker_gone(self, worker: Worker, status: int) -> None:
        """Forget an exited worker, decide what its slot needs, run the exit hooks."""
        worker.status = status
        self._close_channel(worker)
        if worker._kill_timer is not None:
            worker._kill_timer.cancel()
        slot = self._slots.slots.get(worker.index)
        if slot is not None and slot.successor is worker:
            slot.successor = None
            log.warning(
                "%s (generation %d) exited with status %d before it was ready",
                worker.describe(),
                worker.generation,
                status,
            )
            self._abandon_roll(f"{worker.describe()} exited with status {status} before it was ready")
        elif worker.stopping:  # asked to: a roll, a shrink or a stop
            log.debug("%s exited with status %d", worker.describe(), status)
        elif not worker.ready:
            delay = self._slots.boot_failed(slot) if slot is not None else 0.0
            log.warning(
                "%s exited with status %d before it was ready; retrying in %.2f s (%d failures in a row)",
                worker.describe(),
                status,
                delay,
                slot.failures if slot else 0,
            )
        else:
            if slot is not None:
                self._slots.died_after_ready(slot)
            log.warning("%s died with status %d; replacing it", worker.describe(), status)
        if slot is not None and slot.current is worker:
            slot.current = None
        self._call_hook("worker_exited", worker, status)
        self._call_worker_hook(worker, "on_unregister")

    # -- slots and spawning --------------------------------------------------------------------------

    def _bind_initial(self) -> None:
        """Bind every slot's listening socket before forking anything."""
        if self.address.path is not None:
            self._shared_sock = self._bind_address(self.address)
        elif self.shared_port:  # one socket, accepted on by whichever worker is idle
            self._shared_sock = bind_listener(self.host, self.port, self.backlog)
            self.port = bound_port(self._shared_sock)
        for address in self.more_addresses:
            self._more_socks.append(self._bind_address(address))
        self._slots.target = self.num_workers
        for index in range(self.num_workers):
            try:
                self._add_slot(index, not_before=self._timers.clock() + index * self.slow_start)
            except BindError as exc:
                exc.slot = index  # which worker's port: the CLI explains PORT+i
                raise

    def _bind_address(self, address: Address) -> socket.socket:
        """One listening socket every worker shares: a Unix socket, or a further HOST:PORT."""
        if address.path is None:
            return bind_listener(address.host, address.port, self.backlog)
        sock = bind_unix(address.path, self.backlog)
        self._unix_paths.append(address.path)
        return sock

    def _add_slot(self, index: int, not_before: float = 0.0) -> Slot:
        """Create slot ``index`` with its listening socket."""
        sock = self._listener(index)
        slot = Slot(index, bound_port(sock), sock, not_before=not_before)
        self._slots.add(slot)
        return slot

    def _listener(self, index: int) -> Any:
        """A listening socket for slot ``index``: the one every slot shares, or a new one on port + index."""
        if self._shared_sock is not None:
            return self._shared_sock
        return bind_listener(self.host, self.port + index if self.port else 0, self.backlog)

    def _keep_slots(self) -> None:
        """Grow, shrink and refill slots to match the target (only while running)."""
        if self.state != "running":
            return
        for index in self._slots.missing_indexes():
            try:
                self._add_slot(index)
            except OSError as exc:
                log.error("cannot add worker %d: %s", index, exc)
                self._slots.target = index
                break
        for slot in self._slots:
            if slot.retired and slot.index < self._slots.target:
                slot.retired = False
        for slot in self._slots.surplus():
            slot.retired = True
            if slot.current is not None:
                self._retire(slot.current)
        for slot in self._slots.empty_retired():
            if not any(w.index == slot.index for w in self._by_pid.values()):
                self._drop_slot(slot)
        for slot in self._slots.due():
            slot.current = self._spawn(slot)

    def _drop_slot(self, slot: Slot) -> None:
        """Forget a retired slot; close its socket unless it is the shared one."""
        self._slots.remove(slot)
        if slot.sock is not None and slot.sock is not self._shared_sock:
            slot.sock.close()
        log.info("slot %d (port %d) removed", slot.index, slot.port)

    def _spawn(self, slot: Slot) -> Worker | None:
        """Fork a worker of the current generation for ``slot``; None when fork fails."""
        worker = self.worker_class(self, slot.index, slot.port, self.generation)  # type: ignore[arg-type]  # self is the Server
        worker.code_generation = self.code_generation
        self._call_worker_hook(worker, "on_register")
        try:
            master_end, worker_end = control_pair()
        except OSError as exc:  # EMFILE/ENFILE: back off like a failed fork instead of spinning
            delay = self._slots.boot_failed(slot)
            log.error("cannot open the control channel of worker %d: %s; retrying in %.2f s", slot.index, exc, delay)
            return None
        if self._spawn_from is not None:  # a generation forks it (prefork.server.generations)
            asked = self._fork_worker_from(self._spawn_from, worker, slot.sock, worker_end)
            worker_end.close()
            if not asked:
                master_end.close()
                self._slots.boot_failed(slot)
                return None
            worker.started_at = time.time()
            worker._attach(master_end)
            assert self._selector is not None
            self._selector.register(master_end, selectors.EVENT_READ, lambda: self._read_worker(worker))
            log.debug(
                "asked generation %d for %s, generation %d",
                self._spawn_from.number,
                worker.describe(),
                worker.generation,
            )
            return worker
        stdio.flush_all()
        try:
            with signals.blocked_for_fork():  # a TERM sent while the child boots must not be lost
                pid = os.fork()
        except OSError as exc:
            master_end.close()
            worker_end.close()
            delay = self._slots.boot_failed(slot)
            log.error("cannot fork worker %d: %s; retrying in %.2f s", slot.index, exc, delay)
            return None
        if pid == 0:
            from prefork.child import run_worker  # already imported by start(): this is a dict lookup

            master_end.close()
            assert slot.sock is not None, "a slot that spawns has its listener"
            run_worker(
                worker,
                app=self.app,
                listener=slot.sock,
                control=worker_end,
                threads=self.threads,
                output_fd=self._output_fd,
                output_path=self._output_path,
                master_pid=self._master_pid,
                close_inherited=lambda: self._close_in_child(slot),
                inline=self.inline_requests,
            )
        worker_end.close()
        worker.pid = pid
        worker.started_at = time.time()
        worker._attach(master_end)
        self._by_pid[pid] = worker
        assert self._selector is not None
        self._selector.register(master_end, selectors.EVENT_READ, lambda: self._read_worker(worker))
        log.debug("spawned %s, generation %d", worker.describe(), worker.generation)
        return worker

    def _close_in_child(self, slot: Slot) -> None:
        """In a new worker: close the master's descriptors the worker must not hold (worker)."""
        for io, _ in self._io_handlers.values():
            _close_quietly(io)
        if self._selector is not None:
            self._selector.close()
        if self._pipe is not None:
            self._pipe.close()
        for other in self._slots:
            if other.sock is not None and other.sock is not slot.sock:
                other.sock.close()
        for worker in self._by_pid.values():
            if worker._control is not None:
                worker._control.close()

    def _retire(self, worker: Worker) -> None:
        """Stop ``worker`` gracefully (the ``stop`` command, then SIGKILL after graceful_timeout) once it
        has said it is ready; one still booting has accepted nothing, and gets SIGTERM (master)."""
        if worker.stopping:
            return
        if not worker.ready and worker._control is not None:
            self._read_worker(worker)  # its "ready" may be waiting: then it accepts, and may hold connections
        if not worker.reported_ready or worker._control is None:
            self._terminate(worker)  # still booting: it has accepted nothing
            return
        worker.stopping = True

        def stop_failed(result: Any) -> None:
            if isinstance(result, CommandError) and not isinstance(result, (WorkerGone, CommandTimeout)):
                log.warning("%s refused to stop (%s); terminating it", worker.describe(), result)
                self._signal(worker, signal.SIGTERM)

        worker.call_async("stop", timeout=self.graceful_timeout, callback=stop_failed)
        worker._kill_timer = self.call_later(self.graceful_timeout, lambda: self._overdue(worker))

    def _terminate(self, worker: Worker) -> None:
        """Stop ``worker`` now: SIGTERM, then SIGKILL after term_timeout (or at its earlier deadline)."""
        worker.stopping = True
        self._signal(worker, signal.SIGTERM)
        timer = worker._kill_timer
        if timer is not None and not timer.cancelled:
            if timer.when <= self._timers.clock() + self.term_timeout:
                return  # a graceful stop's deadline comes first: stopping now never makes it later
            timer.cancel()
        worker._kill_timer = self.call_later(self.term_timeout, lambda: self._overdue(worker))

    def _overdue(self, worker: Worker) -> None:
        """A stopping worker outlived its deadline: SIGKILL it."""
        if worker.pid in self._by_pid:
            log.warning("%s did not stop in time; killing it", worker.describe())
            if self.state == "stopping":
                self.stopped_cleanly = False
            self._signal(worker, signal.SIGKILL)

    def _signal(self, worker: Worker, signum: int) -> None:
        """Send ``signum`` to a worker that has not been reaped yet."""
        if worker.pid is not None and worker.pid in self._by_pid:
            try:
                os.kill(worker.pid, signum)
            except ProcessLookupError:
                pass

    def _maybe_announce(self) -> None:
        """Run when_ready (and tell systemd) once every slot first has a ready worker."""
        if self._announced or self.state != "running":
            return
        slots = self._slots.active()
        if len(slots) < self._slots.target or not all(s.current is not None and s.current.ready for s in slots):
            return
        self._announced = True
        interfaces = sorted({s.current.interface for s in slots if s.current is not None and s.current.interface})
        served = ", ".join(f"{interface.upper()}, {SERVED_BY[interface]}" for interface in interfaces)
        log.info("all %d workers ready%s", len(slots), f" ({served})" if served else "")
        notify("READY=1")
        self._call_hook("when_ready")


def _close_quietly(io: Any) -> None:
    """Close an fd or an object with close() (in a new worker, on the master's descriptors)."""
    try:
        if isinstance(io, int):
            os.close(io)
        elif hasattr(io, "close"):
            io.close()
        else:
            os.close(io.fileno())
    except Exception as exc:  # noqa: BLE001 - a user object's close() must not kill every worker at boot
        log.debug("closing %r in a new worker: %s", io, exc)
