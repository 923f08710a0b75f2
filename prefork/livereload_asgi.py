"""Live reload for ASGI apps: :class:`AsgiLiveReload`, the ASGI twin of :class:`prefork.livereload.LiveReload`.

Runs in an ASGI worker, in uvicorn's event loop. The same page script, status and reserved paths as
the WSGI middleware (see ``prefork.livereload``): the script goes before the last ``</body>`` of an
HTML response, whose start message is held until its last body chunk; every other response, and
every WebSocket and lifespan message, passes through untouched. The status answers at once, so a
page's polls never hold a connection open (an old worker drains as soon as the new ones are ready).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.middleware.asgi2 import ASGI2Middleware

from prefork.livereload import POLL_MS, SCRIPT, SCRIPT_PATH, STATUS_PATH, Status, inject, script_tag, status_body
from prefork.livereload import should_inject as _should_inject

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiLiveReload:
    """ASGI middleware (worker): the live reload script in HTML pages, and its status and script endpoints.

    ``status()`` is the worker's :meth:`~prefork.livereload.LiveReloadWorker.livereload_status`.
    """

    def __init__(self, app: Any, status: Status, poll_ms: int = POLL_MS) -> None:
        # An ASGI2 app is a class built from each scope, then awaited with (receive, send).
        self.app: Any = ASGI2Middleware(app) if inspect.isclass(app) else app  # type: ignore[arg-type]
        self.status = status
        self.poll_ms = poll_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope.get("path") or "", _root(scope)
        if path in (STATUS_PATH, root + STATUS_PATH):
            await _answer(send, "application/json", status_body(self.status()))
        elif path in (SCRIPT_PATH, root + SCRIPT_PATH):
            await _answer(send, "application/javascript; charset=utf-8", SCRIPT.encode())
        else:
            await self.app(scope, receive, _Injecting(send, lambda: self.tag(scope)).send)

    def tag(self, scope: Scope) -> bytes:
        """The ``<script>`` tag for a page this worker serves (the same as the WSGI middleware's)."""
        return script_tag(self.status(), _root(scope), str(scope.get("method") or "GET"), self.poll_ms)


class _Injecting:
    """The app's ``send`` for one HTTP request: an HTML page's start is held until its body is whole."""

    def __init__(self, send: Send, tag: Callable[[], bytes]) -> None:
        self.real = send
        self.tag = tag
        self.start: Message | None = None  # the held start message of an HTML page
        self.body: list[bytes] = []

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start" and _should_inject_start(message):
            self.start, self.body = message, []
        elif kind == "http.response.body" and self.start is not None:
            self.body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                await self._finish()
        else:
            await self.real(message)

    async def _finish(self) -> None:
        """Send the held page: its start (Content-Length adjusted) and its body with the script in."""
        assert self.start is not None
        start, body = self.start, b"".join(self.body)
        self.start, self.body = None, []
        page = inject(body, self.tag())
        if page is not body:
            length = str(len(page)).encode()
            headers = [
                (name, length if bytes(name).lower() == b"content-length" else value)
                for name, value in start.get("headers", [])
            ]
            start = {**start, "headers": headers}
        await self.real(start)
        await self.real({"type": "http.response.body", "body": page, "more_body": False})


def _should_inject_start(message: Message) -> bool:
    """The WSGI middleware's rule (:func:`prefork.livereload.should_inject`) on an ASGI start message."""
    headers = [
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in message.get("headers", [])
    ]
    return _should_inject(str(message.get("status", 200)), headers)


async def _answer(send: Send, content_type: str, body: bytes) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _root(scope: Scope) -> str:
    return str(scope.get("root_path") or "").rstrip("/")
