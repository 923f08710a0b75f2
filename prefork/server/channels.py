"""The master's side of the workers' control channels (mixed into Server; runs in the master).

Reads what workers send (the ready event, replies), writes what the master sends (whole frames,
buffered, when the channel is writable), broadcasts commands, and pings for hung-worker detection.
The per-request bookkeeping (ids, callbacks, timeouts) lives on each Worker.
"""

from __future__ import annotations

import functools
import logging
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

from prefork.control import MAX_FRAME, FrameError
from prefork.server.state import MasterState
from prefork.worker import SERVED_BY, CommandError, CommandTimeout, Worker, iter_messages

log = logging.getLogger("prefork")


class WorkerChannels(MasterState):
    """Commands and messages between the master and its workers."""

    # Bytes of frames a worker's channel may hold unsent (beyond what its socket buffers took): a
    # worker that lets this much pile up is not reading its channel (stopped, hung on a request with
    # threads=1) and is killed and replaced, rather than the master waiting or cutting a frame.
    max_unsent = 4 * MAX_FRAME

    def broadcast(self, command: str, *args: Any, timeout: float = 5.0) -> dict[int, Any]:
        """Run ``command`` in every current worker; return ``{index: result}``.

        A worker that fails has a CommandError (CommandTimeout, WorkerGone) as its value instead
        of a result; results are JSON values, so ``isinstance(value, CommandError)`` tells them
        apart. Blocks the master loop for at most ``timeout`` seconds.
        """
        targets = self.workers
        results: dict[int, Any] = {}
        requests: dict[int, int] = {}
        for worker in targets:
            requests[worker.index] = worker.call_async(
                command, *args, timeout=timeout, callback=functools.partial(_store, results, worker.index)
            )
        deadline = time.monotonic() + timeout
        while len(results) < len(targets):
            waiting = [w for w in targets if w.index not in results and w._control is not None]
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                break
            for worker in self._wait_channels(waiting, remaining):
                self._read_worker(worker)
        for worker in targets:
            if worker.index not in results:
                worker._expire(requests[worker.index], command, timeout)
        return dict(sorted(results.items()))

    def broadcast_async(
        self, command: str, *args: Any, timeout: float = 5.0, callback: Callable[[dict[int, Any]], Any]
    ) -> None:
        """Like ``broadcast`` without blocking: ``callback({index: result or CommandError})`` later."""
        targets = self.workers
        results: dict[int, Any] = {}
        if not targets:
            callback(results)
            return

        def collect(worker: Worker, result: Any) -> None:
            results[worker.index] = result
            if len(results) == len(targets):
                callback(dict(sorted(results.items())))

        for worker in targets:
            worker.call_async(command, *args, timeout=timeout, callback=functools.partial(collect, worker))

    # -- worker channels -------------------------------------------------------------------------------

    def _next_request_id(self) -> int:
        return int(next(self._request_ids))

    def _send_frame(self, worker: Worker, frame: bytes) -> bool:
        """Queue one whole frame for ``worker`` and write what its channel takes now (never waits).

        False when the channel cannot take it (``max_unsent`` bytes would be waiting): the channel
        is closed, its pending requests fail with WorkerGone, and the worker is killed (the loop
        replaces it). A frame is never cut: the worker reads whole frames or nothing more.
        """
        if worker._control is None:
            return False
        if len(worker._outgoing) + len(frame) > self.max_unsent:
            log.error(
                "%s does not read its control channel (%d bytes unsent); killing it",
                worker.describe(),
                len(worker._outgoing),
            )
            self._close_channel(worker, "its control channel is full: the worker does not read it")
            self._signal(worker, signal.SIGKILL)
            return False
        worker._outgoing += frame
        self._write_worker(worker)
        return True

    def _write_worker(self, worker: Worker) -> None:
        """Send what ``worker``'s channel takes of its queued frames; watch for writability if some is left."""
        sock = worker._control
        if sock is None:
            return
        while worker._outgoing:
            try:
                sent = sock.send(worker._outgoing)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EPIPE, ECONNRESET: the worker is gone or going
                log.warning("%s: control channel broken (%s)", worker.describe(), exc)
                self._close_channel(worker, f"cannot send to the worker: {exc}")
                self._signal(worker, signal.SIGKILL)  # a worker without its channel is out of our control
                return
            del worker._outgoing[:sent]
        self._watch_writes(worker, bool(worker._outgoing))

    def _watch_writes(self, worker: Worker, on: bool) -> None:
        """Have the loop wake when ``worker``'s channel is writable (``on``), or only readable.

        The loop calls the channel's callback (``_read_worker``) either way; it writes first.
        """
        if self._selector is None or worker._control is None:
            return
        try:
            key = self._selector.get_key(worker._control)
        except (KeyError, ValueError):  # not registered (yet): the loop registers it after the fork
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if key.events != events:
            self._selector.modify(worker._control, events, key.data)

    @staticmethod
    def _wait_channels(workers: list[Worker], timeout: float) -> list[Worker]:
        """Block up to ``timeout`` until one of ``workers``' channels is readable, or writable with
        frames queued; return those (the blocking ``call``/``broadcast`` only, never the loop)."""
        with selectors.DefaultSelector() as selector:  # poll/epoll: no limit on descriptor numbers
            for worker in workers:
                if worker._control is not None:
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if worker._outgoing else 0)
                    selector.register(worker._control, events, worker)
            if not selector.get_map():
                return []
            return [key.data for key, _ in selector.select(timeout)]

    def _read_worker(self, worker: Worker) -> None:
        """Write what is queued for ``worker``, then read what it sent and handle each message."""
        if worker._outgoing:
            self._write_worker(worker)
        sock = worker._control
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_channel(worker)
            self._signal(worker, signal.SIGKILL)  # a worker without its channel is out of our control
            return
        for item in iter_messages(worker._reader, data):
            if isinstance(item, FrameError):
                log.warning("%s sent a bad control frame: %s", worker.describe(), item)
                if worker._reader.broken:
                    self._close_channel(worker)
                    self._signal(worker, signal.SIGKILL)
                    return
            else:
                self._on_worker_message(worker, item)

    def _on_worker_message(self, worker: Worker, message: dict[str, Any]) -> None:
        """Dispatch one message from a worker: an event, or a reply to a request."""
        event = message.get("event")
        if event == "ready":
            worker.reported_ready = True
            worker.interface = message.get("interface") if message.get("interface") in SERVED_BY else None
            self.post_event("worker_ready", worker)
        elif event is not None:
            log.warning("%s sent unknown event %r", worker.describe(), event)
        elif not worker._resolve(message):
            if message.get("ok") is False:
                log.warning("%s reported an error: %s", worker.describe(), message.get("error"))
            else:
                log.debug("%s: reply to no pending request: %r", worker.describe(), message)

    def _close_channel(self, worker: Worker, reason: str | None = None) -> None:
        """Unregister and close a worker's channel; its pending requests fail with WorkerGone."""
        if worker._control is not None and self._selector is not None:
            try:
                self._selector.unregister(worker._control)
            except (KeyError, ValueError):
                pass
        if reason is None:
            worker._detach()
        else:
            worker._detach(reason)

    def _schedule_ping(self, worker: Worker) -> None:
        """Hung-worker detection: ping every ``timeout`` seconds; no answer in time means SIGKILL."""
        assert self.timeout is not None

        def answered(result: Any) -> None:
            if isinstance(result, CommandTimeout) and not worker.stopping:
                log.warning("%s did not answer ping within %g s; killing it", worker.describe(), self.timeout)
                self._signal(worker, signal.SIGKILL)
            elif not isinstance(result, CommandError):
                self._schedule_ping(worker)

        timeout = self.timeout
        if timeout is None:
            return

        def ping() -> None:
            if worker.pid in self._by_pid and not worker.stopping:
                worker.call_async("ping", timeout=timeout, callback=answered)

        self.call_later(timeout, ping)


def _store(results: dict[int, Any], index: int, result: Any) -> None:
    """A broadcast's callback: keep ``result`` as the answer of worker ``index``."""
    results[index] = result
