"""A stand-in for prefork.Server in ControlServer tests: the same attributes, a real selectors loop.

It is a fake of the *server* (workers that answer stats from a table), never of os or socket: the
control socket, its clients and the loop that serves them are real. The loop runs in a thread of the
test process so the tests can look at the ControlServer's bookkeeping.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class FakeWorker:
    index: int
    pid: int
    port: int
    generation: int = 1
    ready: bool = True
    started_at: float = field(default_factory=time.time)


@dataclass
class FakeTimer:
    deadline: float
    callback: Callable[[], Any]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeServer:
    """Records what ctl asked for; answers broadcasts from ``self.stats`` / ``self.commands``."""

    def __init__(self, workers: int = 2, port: int = 8000) -> None:
        self.generation = 1
        self.workers = [FakeWorker(i, 40000 + i, port + i) for i in range(workers)]
        self.reloads = 0
        self.worker_counts: list[int] = []
        self.broadcasts: list[tuple[str, tuple[Any, ...]]] = []
        self.loop_errors: list[BaseException] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._timers: list[FakeTimer] = []

    # the Server API ControlServer uses
    def add_io_handler(self, io: Any, callback: Callable[[Any], None]) -> None:
        self._selector.register(io, selectors.EVENT_READ, (io, callback))

    def remove_io_handler(self, io: Any) -> None:
        self._selector.unregister(io)

    def reload(self) -> None:
        self.reloads += 1

    def set_workers(self, n: int) -> None:
        self.worker_counts.append(n)

    def broadcast(self, command: str, *args: Any, timeout: float = 5.0) -> dict[int, Any]:
        self.broadcasts.append((command, args))
        if command == "stats":
            return {w.index: {"pid": w.pid, "port": w.port, "requests_served": 10 * w.index,
                              "requests_in_flight": w.index, "rss": 25 * 1024 * 1024} for w in self.workers}
        if command == "ping":
            return {w.index: "pong" for w in self.workers}
        if command == "echo":
            return {w.index: list(args) for w in self.workers}
        return {w.index: LookupError(f"unknown command {command!r}") for w in self.workers}

    def call_later(self, delay: float, callback: Callable[[], Any]) -> "FakeTimer":
        """A timer of the loop (called from the loop thread, as Server.call_later is from the master loop)."""
        timer = FakeTimer(time.monotonic() + delay, callback)
        self._timers.append(timer)
        return timer

    # the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive()
            self._thread = None

    def close(self) -> None:
        """Release the loop's selector and pipe (after the ControlServer is closed)."""
        self.stop()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stopping:
            for timer in self._due_timers():
                timer.callback()
            pending = [t.deadline for t in self._timers if not t.cancelled]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            for key, _ in self._selector.select(timeout):
                if key.data is None or key.fileobj not in self._registered():
                    continue
                io, callback = key.data
                try:
                    callback(io)
                except BaseException as exc:  # a crash here is what the tests look for
                    self.loop_errors.append(exc)
                    raise

    def _due_timers(self) -> list["FakeTimer"]:
        now = time.monotonic()
        due = [t for t in self._timers if t.deadline <= now and not t.cancelled]
        self._timers = [t for t in self._timers if t.deadline > now and not t.cancelled]
        return due

    def _registered(self) -> set[Any]:
        return {key.fileobj for key in self._selector.get_map().values()}


class AsyncFakeServer(FakeServer):
    """A FakeServer with ``broadcast_async`` whose answers are held until ``release()``.

    The answers are delivered in the loop thread (through a real pipe registered as an io handler),
    as prefork.Server delivers them from its master loop.
    """

    def __init__(self, workers: int = 2, port: int = 8000) -> None:
        super().__init__(workers, port)
        self.held: list[Callable[[], None]] = []
        self._release_r, self._release_w = os.pipe()
        self.add_io_handler(self._release_r, self._deliver)

    def broadcast_async(self, command: str, *args: Any, timeout: float = 5.0,
                        callback: Callable[[dict[int, Any]], Any]) -> None:
        results = self.broadcast(command, *args, timeout=timeout)
        self.held.append(lambda: callback(results))

    def release(self) -> None:
        """Ask the loop to deliver every held answer (called from the test thread)."""
        os.write(self._release_w, b"x")

    def _deliver(self, fd: int) -> None:
        os.read(fd, 4096)
        held, self.held = self.held, []
        for deliver in held:
            deliver()

    def close(self) -> None:
        super().close()
        os.close(self._release_r)
        os.close(self._release_w)
