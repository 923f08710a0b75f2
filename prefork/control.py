"""The wire format shared by the worker control channel and the operator (``prefork ctl``) socket.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON, which
must decode to an object. Frames larger than :data:`MAX_FRAME` are refused before they are read.

Messages (all JSON objects):

- request, master -> worker or client -> master: ``{"id": 7, "command": "stats", "args": []}``
- reply: ``{"id": 7, "ok": true, "result": ...}`` or ``{"id": 7, "ok": false, "error": "..."}``
- event, worker -> master, unsolicited: ``{"event": "ready", ...}``

The same code runs in the master, the workers and the ``prefork ctl`` client.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

MAX_FRAME = 1 << 20  # 1 MiB: a command or reply larger than this is a bug or an attack
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """A frame that cannot be accepted: too large, not UTF-8, not JSON, or not a JSON object."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """Return ``message`` as one frame; raise FrameError when it cannot be sent."""
    try:
        body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise FrameError(f"message is not JSON-serialisable: {exc}") from exc
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the limit of {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Decode one frame body; raise FrameError unless it is a UTF-8 JSON object."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: a body of deeply nested arrays (b"[" * 100000) must not crash the reader.
        raise FrameError(f"frame is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise FrameError(f"frame is a JSON {type(message).__name__}, not an object")
    return message


class FrameReader:
    """Split a byte stream into messages; feed it what ``recv`` returned.

    A malformed body raises FrameError for that frame only (the stream stays in sync, because the
    length prefix says where the next frame starts). An oversized length cannot be skipped safely,
    so it raises FrameError and marks the reader broken: the caller should reply and close.
    """

    def __init__(self, max_frame: int = MAX_FRAME, skip_oversized: bool = False) -> None:
        self.max_frame = max_frame
        # skip_oversized: trust the length of an oversized frame and discard that many bytes instead
        # of breaking (the worker's channel, whose only peer is the master's own code).
        self.skip_oversized = skip_oversized
        self.broken = False
        self._buffer = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Yield each complete message in ``data`` (plus what was buffered before)."""
        if self.broken:
            raise FrameError("stream is out of sync after an oversized frame")
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                if self.skip_oversized:
                    dropped = min(length, len(self._buffer) - _HEADER.size)
                    self._skip = length - dropped
                    del self._buffer[: _HEADER.size + dropped]
                else:
                    self.broken = True
                    self._buffer.clear()
                raise FrameError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield decode_body(body)

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete frame are buffered."""
        return len(self._buffer)


def request(request_id: int, command: str, args: list[Any] | tuple[Any, ...] = ()) -> dict[str, Any]:
    """Build a request message."""
    return {"id": request_id, "command": command, "args": list(args)}


def reply_ok(request_id: Any, result: Any = None) -> dict[str, Any]:
    """Build a success reply."""
    return {"id": request_id, "ok": True, "result": result}


def reply_error(request_id: Any, error: str) -> dict[str, Any]:
    """Build an error reply."""
    return {"id": request_id, "ok": False, "error": error}


def parse_request(message: dict[str, Any]) -> tuple[Any, str, list[Any]]:
    """Return ``(id, command, args)`` of a request; raise FrameError naming what is wrong."""
    command = message.get("command")
    args = message.get("args", [])
    if not isinstance(command, str) or not command:
        raise FrameError("request has no 'command' string")
    if not isinstance(args, list):
        raise FrameError("'args' must be a JSON array")
    return message.get("id"), command, args


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message on a blocking socket."""
    sock.sendall(encode_frame(message))


def recv_message(sock: socket.socket, reader: FrameReader, timeout: float | None) -> dict[str, Any]:
    """Read until one whole message arrives on ``sock``; raise TimeoutError or EOFError.

    Used by blocking clients (``prefork ctl``, tests). The master and the workers read their
    channels from their event loops instead, with a FrameReader of their own.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for message in reader.feed(b""):
            return message
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply before the deadline")
            sock.settimeout(remaining)
        else:
            sock.settimeout(None)
        try:
            data = sock.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError("no reply before the deadline") from exc
        if not data:
            raise EOFError("peer closed the connection")
        for message in reader.feed(data):
            return message
