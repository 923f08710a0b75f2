"""The ASGI live reload middleware (prefork.livereload_asgi) on its own: what it sends for each kind of
response, message by message (pure logic; the browser test serves it for real)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from prefork.livereload import MARKER, SCRIPT, SCRIPT_PATH, STATUS_PATH
from prefork.livereload_asgi import AsgiLiveReload

PAGE = b"<!doctype html><html><body><h1>hi</h1></body></html>"
STATE = {"instance": "i-1", "generation": 3, "failure": None, "stopping": False}


def page_app(chunks: list[bytes], content_type: bytes = b"text/html; charset=utf-8", status: int = 200,
             length: bool = True):
    """An ASGI app sending ``chunks`` as its body (more_body on all but the last)."""
    async def app(scope, receive, send):
        headers = [(b"content-type", content_type)]
        if length:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
    return app


def run(app: Any, path: str = "/", scope_type: str = "http", state: dict | None = None,
        **scope: Any) -> list[dict]:
    """Call the middleware around ``app`` once; return the messages it sent."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    middleware = AsgiLiveReload(app, lambda: dict(state or STATE))
    asyncio.run(middleware({"type": scope_type, "path": path, "method": "GET", **scope}, receive, send))
    return sent


def body(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def header(sent: list[dict], name: bytes) -> bytes | None:
    return dict(sent[0]["headers"]).get(name)


@pytest.mark.parametrize("chunks", [[PAGE], [PAGE[:20], PAGE[20:40], PAGE[40:]], [PAGE, b""]])
def test_the_script_goes_before_the_last_body_end_tag_and_the_length_follows(chunks):
    sent = run(page_app(chunks))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    page = body(sent)
    at = page.index(b"<script " + MARKER)
    assert page[:at] + page[page.index(b"</script>", at) + 9:] == PAGE  # the page, plus the tag only
    assert page.index(b"</script>", at) < page.rindex(b"</body>")
    assert b'data-generation="3"' in page and b'data-instance="i-1"' in page
    assert header(sent, b"content-length") == str(len(page)).encode()
    assert sent[-1]["more_body"] is False


def test_a_page_without_content_length_gets_none():
    sent = run(page_app([PAGE], length=False))
    assert header(sent, b"content-length") is None and MARKER in body(sent)


@pytest.mark.parametrize("content_type, status", [(b"application/json", 200), (b"text/plain", 200),
                                                  (b"text/html", 304), (b"text/html", 204)])
def test_other_responses_pass_through_message_by_message(content_type, status):
    chunks = [b'{"a": ', b"1}"]
    app = page_app(chunks, content_type=content_type, status=status)
    sent = run(app)
    assert [m.get("more_body") for m in sent[1:]] == [True, False]  # not gathered into one
    assert body(sent) == b"".join(chunks) and header(sent, b"content-length") == b"8"


def test_an_error_page_gets_the_script_a_fragment_does_not():
    assert MARKER in body(run(page_app([PAGE], status=500)))
    fragment = b"<div>no body end tag</div>"
    sent = run(page_app([fragment]))
    assert body(sent) == fragment and header(sent, b"content-length") == str(len(fragment)).encode()


def test_the_status_answers_at_once_and_the_script_is_served():
    failure = {"file": "/app/main.py", "line": 3, "error": "SyntaxError: bad", "traceback": "tb"}
    called: list[str] = []

    async def app(scope, receive, send):  # never reached for the reserved paths
        called.append(scope["path"])

    status = json.loads(body(run(app, STATUS_PATH, state={**STATE, "failure": failure, "stopping": True})))
    assert status == {"instance": "i-1", "generation": 3, "pid": os.getpid(), "stopping": True,
                      "failure": {"file": "/app/main.py", "line": 3, "error": "SyntaxError: bad", "traceback": "tb"}}
    script = run(app, SCRIPT_PATH)
    assert body(script) == SCRIPT.encode() and header(script, b"cache-control") == b"no-store"
    assert called == []


def test_paths_follow_the_root_path():
    page = body(run(page_app([PAGE]), "/app/", root_path="/app"))
    assert b'src="/app' + SCRIPT_PATH.encode() + b'"' in page
    assert b'data-endpoint="/app' + STATUS_PATH.encode() + b'"' in page

    async def app(scope, receive, send):
        raise AssertionError("the status path is the middleware's")

    for path in (STATUS_PATH, "/app" + STATUS_PATH):  # with or without the root in scope["path"]
        assert json.loads(body(run(app, path, root_path="/app")))["generation"] == 3


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
def test_websockets_and_the_lifespan_pass_through_untouched(scope_type):
    seen: list[Any] = []

    async def app(scope, receive, send):
        seen.append((scope["type"], send))

    run(app, STATUS_PATH, scope_type=scope_type)
    assert len(seen) == 1 and seen[0][0] == scope_type and seen[0][1].__name__ == "send"  # the server's own
