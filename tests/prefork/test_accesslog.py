"""The access log's pieces, in this process: the line format, WSGI and ASGI wrappers, the writer thread.

Real files and pipes; the servers that write it are in tests/integration/test_cli_gunicorn.py.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from prefork.accesslog import AccessLog, asgi_environ, format_line

STAMP = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"


def test_format_is_gunicorns_default_and_quotes_what_clients_send():
    environ = {"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "POST", "PATH_INFO": "/a b", "QUERY_STRING": "x=1",
               "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_REFERER": 'r"\n', "HTTP_USER_AGENT": "ua\\"}
    line = format_line(environ, "201 Created", 12)
    assert re.fullmatch(rf'10\.0\.0\.1 - - {STAMP} "POST /a b\?x=1 HTTP/1\.0" 201 12 "r\\"\\n" "ua\\\\"\n', line), line
    assert format_line({}, "500 Internal Server Error", None).endswith(' "- - -" 500 - "-" "-"\n')


def read_all(path: Path, log: AccessLog) -> str:
    log.close()
    return path.read_text()


def test_wsgi_body_is_counted_closed_and_keeps_its_length(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), str(path))
    closed = []

    class Body(list):
        def close(self) -> None:
            closed.append(True)

    def app(environ, start_response):
        start_response("404 Not Found", [])
        return Body([b"abc", b"de"])

    body = log.wrap(app)({"PATH_INFO": "/x", "REQUEST_METHOD": "GET"}, lambda *a: None)
    assert len(body) == 2  # waitress looks at len() of a list body to set Content-Length
    assert b"".join(body) == b"abcde"
    body.close()
    assert closed == [True]
    assert re.search(r'"GET /x -" 404 5 ', read_all(path, log))


def test_an_app_that_raises_is_logged_as_500(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), str(path))

    def app(environ, start_response):
        raise RuntimeError("boom")

    try:
        log.wrap(app)({"PATH_INFO": "/boom"}, lambda *a: None)
    except RuntimeError:
        pass
    assert ' 500 - ' in read_all(path, log)


def test_asgi_requests_are_logged_websockets_are_not(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), str(path))

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 418, "headers": []})
            await send({"type": "http.response.body", "body": b"tea", "more_body": True})
            await send({"type": "http.response.body", "body": b"pot"})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/brew", "query_string": b"cups=2", "http_version": "1.1",
             "client": ("127.0.0.1", 5000), "headers": [(b"User-Agent", b"kettle")]}
    wrapped = log.wrap_asgi(app)
    asyncio.run(wrapped(scope, None, send))
    asyncio.run(wrapped({"type": "websocket", "path": "/ws"}, None, send))
    assert len(sent) == 3
    assert re.fullmatch(rf'127\.0\.0\.1 - - {STAMP} "GET /brew\?cups=2 HTTP/1\.1" 418 6 "-" "kettle"\n',
                        read_all(path, log))
    assert asgi_environ({})["REMOTE_ADDR"] == "-"


def test_a_log_nobody_reads_never_blocks_and_counts_what_it_dropped(tmp_path):
    read_end, write_end = os.pipe()  # nobody reads: the writer thread blocks once the pipe is full
    log = AccessLog(write_end)
    line = "x" * 200 + "\n"
    for _ in range(20_000):  # more than the pipe and the queue hold; each add() returns at once
        log.add(line)
    assert log.dropped > 0
    os.set_blocking(read_end, False)
    received = b""
    while True:  # drain: the writer goes on, then reports the drop count
        try:
            chunk = os.read(read_end, 1 << 20)
        except BlockingIOError:
            if b"access log lines dropped" in received:
                break
            log.add("tail\n")
            continue
        received += chunk
    assert re.search(rb"prefork: \d+ access log lines dropped", received)
    log.close(timeout=0.1)
    os.close(read_end)
