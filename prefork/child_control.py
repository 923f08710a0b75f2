"""The worker's end of its control channel: read frames, run commands, queue replies (worker).

Shared by both worker runtimes: ``prefork.child`` (waitress: a dispatcher in waitress's socket map)
and ``prefork.child_asgi`` (uvicorn: a reader in the asyncio loop). Each supplies the transport
(when to read, how to flush ``outgoing``); the protocol and the command dispatch live here once.
"""

from __future__ import annotations

import logging
from socket import socket as Socket
from typing import Any, Protocol

from prefork import commands
from prefork.control import FrameError, FrameReader, encode_frame, parse_request, reply_error, reply_ok
from prefork.worker import Worker, iter_messages

log = logging.getLogger("prefork.worker")


class WorkerRuntime(Protocol):
    """What the channel needs of a worker runtime (``child.Runtime``, ``child_asgi.AsgiRuntime``)."""

    worker: Worker

    def master_gone(self) -> Any: ...


class ChannelEnd:
    """The protocol half of the worker's control channel; subclasses add the transport."""

    runtime: WorkerRuntime
    socket: Socket  # the transport's

    def _init_channel(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.reader = FrameReader(skip_oversized=True)
        self.outgoing = bytearray()

    def flush(self) -> None:
        """Send what the socket takes of ``outgoing`` now (the transport's)."""
        raise NotImplementedError

    def receive(self, sock: Socket) -> None:
        """Read what arrived, answer every request in it; EOF means the master is gone."""
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.runtime.master_gone()
        for item in iter_messages(self.reader, data):
            if isinstance(item, FrameError):
                log.warning("%s: bad control frame: %s", self.runtime.worker.describe(), item)
                self.send_message(reply_error(None, f"bad frame: {item}"))
            else:
                self.send_message(self.answer(item))

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one request and build its reply; an error is a reply, never an exit."""
        worker = self.runtime.worker
        request_id = message.get("id")
        try:
            request_id, command, args = parse_request(message)
        except FrameError as exc:
            log.warning("%s: bad control request: %s", worker.describe(), exc)
            return reply_error(request_id, f"bad request: {exc}")
        try:
            result = commands.run_command(worker, command, args)
            encode_frame(reply_ok(request_id, result))  # refuse what cannot be sent before saying ok
        except Exception as exc:
            expected = isinstance(exc, (commands.UnknownCommand, commands.BadArguments, FrameError))
            log.warning(
                "%s: command %s failed: %s: %s",
                worker.describe(),
                command,
                type(exc).__name__,
                exc,
                exc_info=not expected,
            )
            return reply_error(request_id, f"{type(exc).__name__}: {exc}")
        return reply_ok(request_id, result)

    def flush_blocking(self, timeout: float = 1.0) -> None:
        """Send what is queued before the process exits."""
        if self.outgoing:
            self.socket.settimeout(timeout)
            try:
                self.socket.sendall(self.outgoing)
            except OSError:
                pass
            self.outgoing.clear()

    def send_message(self, message: dict[str, Any]) -> None:
        """Queue a message for the master and send what the socket takes now."""
        self.outgoing += encode_frame(message)
        self.flush()
