"""The access log: one line per request in gunicorn's default format, written by each worker.

Runs in the worker. The middleware formats the line when the response is complete (the server
closes the body) and hands it to a writer thread: a slow or full log (a pipe nobody reads, a
stalled disk) delays the log, never a request. If the writer falls ``MAX_PENDING`` lines behind,
further lines are dropped and counted, and the count is written once the writer catches up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("prefork.worker")

MAX_PENDING = 10_000  # lines waiting for the writer thread before new ones are dropped
_STOP = object()


def format_line(environ: dict[str, Any], status: str, size: int | None, now: float | None = None) -> str:
    """One request in gunicorn's default format: ``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"``."""
    stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
    query = environ.get("QUERY_STRING")
    target = (environ.get("PATH_INFO", "") + (f"?{query}" if query else "")) or "-"
    request = f"{environ.get('REQUEST_METHOD', '-')} {target} {environ.get('SERVER_PROTOCOL', '-')}"
    return (
        f"{environ.get('REMOTE_ADDR') or '-'} - {environ.get('REMOTE_USER') or '-'} {stamp} "
        f'"{_clean(request)}" {status.split(" ", 1)[0]} {"-" if size is None else size} '
        f'"{_clean(environ.get("HTTP_REFERER", "-"))}" "{_clean(environ.get("HTTP_USER_AGENT", "-"))}"\n'
    )


def asgi_environ(scope: dict[str, Any]) -> dict[str, Any]:
    """The WSGI environ keys ``format_line`` reads, from an ASGI HTTP scope."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
    client = scope.get("client") or ("-", 0)
    return {
        "REMOTE_ADDR": client[0],
        "REQUEST_METHOD": scope.get("method", "-"),
        "PATH_INFO": scope.get("path", ""),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "HTTP_REFERER": headers.get("referer", "-"),
        "HTTP_USER_AGENT": headers.get("user-agent", "-"),
    }


def _clean(text: str) -> str:
    """Keep a client's header from breaking the line or the quoting."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


class AccessLog:
    """Formats requests and writes them from a thread of its own (worker)."""

    def __init__(self, fd: int, path: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self.dropped = 0
        self._lines: queue.Queue[object] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._write_lines, name="prefork-access-log", daemon=True)
        self._thread.start()

    def wrap(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``app`` with each request logged once its response is complete."""

        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            seen: dict[str, Any] = {}

            def recording_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                seen["status"] = status
                return start_response(status, headers, *exc)

            def done(size: int | None) -> None:
                self.add(format_line(environ, seen.get("status", "500"), size))

            try:
                body = app(environ, recording_start_response)
            except BaseException:
                done(None)  # the server answers 500
                raise
            # A body with a length keeps it: waitress sets Content-Length for a one-chunk list.
            return _SizedBody(body, done) if hasattr(body, "__len__") else _Body(body, done)

        return logged

    def wrap_asgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """Return the ASGI ``app`` with each HTTP request logged once its response is complete."""

        async def logged(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            seen: dict[str, Any] = {"status": "500", "size": 0}

            async def recording_send(message: dict[str, Any]) -> None:
                if message.get("type") == "http.response.start":
                    seen["status"] = str(message.get("status", 500))
                elif message.get("type") == "http.response.body":
                    seen["size"] += len(message.get("body", b""))
                await send(message)

            try:
                await app(scope, receive, recording_send)
            finally:
                self.add(format_line(asgi_environ(scope), seen["status"], seen["size"]))

        return logged

    def add(self, line: str) -> None:
        """Queue ``line`` for the writer; never blocks."""
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def reopen(self) -> None:
        """Reopen the log's path (USR1 after logrotate moved it); a stream given as an fd stays."""
        if self.path is None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, self.fd)  # the writer thread keeps its fd number
        os.close(fd)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) before the worker exits."""
        with contextlib.suppress(queue.Full):
            self._lines.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    def _write_lines(self) -> None:
        """The writer thread: write queued lines, several per write when they pile up."""
        while True:
            batch = [self._lines.get()]
            while len(batch) < 256 and not self._lines.empty():
                batch.append(self._lines.get_nowait())
            stop = _STOP in batch
            text = "".join(line for line in batch if isinstance(line, str))
            if self.dropped:
                text += f"prefork: {self.dropped} access log lines dropped (the log could not keep up)\n"
                self.dropped = 0
            self._write(text.encode("utf-8", "replace"))
            if stop:
                return

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except InterruptedError:
                continue
            except OSError as exc:  # a closed pipe or a full disk: the requests go on regardless
                log.warning("access log: cannot write: %s", exc)
                return


class _Body:
    """The app's response body, passed through; reports its size when the server closes it (PEP 3333)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int | None], None]) -> None:
        self.body = body
        self.done = done
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.size += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.done(self.size)


class _SizedBody(_Body):
    """A body that has a length (a list), which the server may look at."""

    def __len__(self) -> int:
        return len(self.body)  # type: ignore[arg-type]
