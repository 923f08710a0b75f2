"""The master's side of the workers' control channels (mixed into Server; runs in the master).

Reads what workers send (the ready event, replies), broadcasts commands, and pings for hung-worker
detection. The per-request bookkeeping (ids, callbacks, timeouts) lives on each Worker.
"""

from __future__ import annotations

import logging
import select
import signal
import time
from typing import Any, Callable

from prefork.control import FrameError
from prefork.worker import CommandError, CommandTimeout, Worker, iter_messages

log = logging.getLogger("prefork")


class WorkerChannels:
    """Commands and messages between the master and its workers."""

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
                command, *args, timeout=timeout, callback=lambda r, w=worker: results.__setitem__(w.index, r))
        deadline = time.monotonic() + timeout
        while len(results) < len(targets):
            waiting = {w._control: w for w in targets if w.index not in results and w._control is not None}
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                break
            readable, _, _ = select.select(list(waiting), [], [], remaining)
            for sock in readable:
                self._read_worker(waiting[sock])
        for worker in targets:
            if worker.index not in results:
                worker._expire(requests[worker.index], command, timeout)
        return dict(sorted(results.items()))

    def broadcast_async(self, command: str, *args: Any, timeout: float = 5.0,
                        callback: Callable[[dict[int, Any]], Any]) -> None:
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
            worker.call_async(command, *args, timeout=timeout, callback=lambda r, w=worker: collect(w, r))

    # -- worker channels -------------------------------------------------------------------------------

    def _next_request_id(self) -> int:
        return next(self._request_ids)

    def _read_worker(self, worker: Worker) -> None:
        """Read what ``worker`` sent on its control channel and handle each message."""
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
            self.post_event("worker_ready", worker)
        elif event is not None:
            log.warning("%s sent unknown event %r", worker.describe(), event)
        elif not worker._resolve(message):
            if message.get("ok") is False:
                log.warning("%s reported an error: %s", worker.describe(), message.get("error"))
            else:
                log.debug("%s: reply to no pending request: %r", worker.describe(), message)

    def _close_channel(self, worker: Worker) -> None:
        """Unregister and close a worker's channel; its pending requests fail with WorkerGone."""
        if worker._control is not None and self._selector is not None:
            try:
                self._selector.unregister(worker._control)
            except (KeyError, ValueError):
                pass
        worker._detach()

    def _schedule_ping(self, worker: Worker) -> None:
        """Hung-worker detection: ping every ``timeout`` seconds; no answer in time means SIGKILL."""
        assert self.timeout is not None

        def answered(result: Any) -> None:
            if isinstance(result, CommandTimeout) and not worker.stopping:
                log.warning("%s did not answer ping within %g s; killing it", worker.describe(), self.timeout)
                self._signal(worker, signal.SIGKILL)
            elif not isinstance(result, CommandError):
                self._schedule_ping(worker)

        def ping() -> None:
            if worker.pid in self._by_pid and not worker.stopping:
                worker.call_async("ping", timeout=self.timeout, callback=answered)

        self.call_later(self.timeout, ping)
