"""prefork.livereload without a browser: the middleware, the worker and master mixins, the flag.

Every app here runs behind ``wsgiref.validate`` on both sides of the middleware, so the responses
are also checked against PEP 3333 (start_response order, close() called, bytes only).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from tests.integration.integration_util import PYTHON

from prefork.livereload import (
    MARKER,
    SCRIPT_PATH,
    STATUS_PATH,
    LiveReload,
    LiveReloadServer,
    LiveReloadWorker,
    inject,
    should_inject,
)
from prefork.worker import Worker


def run_cli_module(*args: str, cwd: Any = None) -> subprocess.CompletedProcess:
    """Run `python -m prefork ARGS` to completion."""
    return subprocess.run([PYTHON, "-m", "prefork", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=20, start_new_session=True)


PAGE = b"<!doctype html><html><head><title>t</title></head><body><h1>hi</h1></body></html>"
STATE = {"instance": "1234-abcd", "generation": 7, "failure": None}


class Closing:
    """An app iterable that counts its close() calls."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def page_app(body: bytes = PAGE, content_type: str = "text/html; charset=utf-8", status: str = "200 OK",
             length: bool = True, extra: list[tuple[str, str]] = ()):
    """An app that answers ``body`` in two chunks (a Closing iterable, kept on the app)."""
    def app(environ, start_response):
        headers = [("Content-Type", content_type), *extra]
        if length:
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        app.result = Closing([body[:10], body[10:]])
        return app.result
    return app


def environment(path: str, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "", **extra}
    setup_testing_defaults(env)
    return env


def call(app: Any, path: str = "/", state: dict[str, Any] | None = None, wrap: bool = True,
         **environ: Any) -> tuple[str, dict[str, str], bytes, Any]:
    """Run ``app`` behind the middleware: (status, headers, body, the iterable the server got)."""
    middleware = LiveReload(validator(app), lambda: state or STATE) if wrap else app
    env = environment(path, **environ)
    got: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, headers
        return lambda data: None

    result = validator(middleware)(env, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return got["status"], {k.lower(): v for k, v in got["headers"]}, body, result


def test_script_goes_before_the_last_body_end_tag_with_the_generation_and_instance():
    app = page_app()
    status, headers, body, _ = call(app)
    assert status == "200 OK"
    assert int(headers["content-length"]) == len(body) > len(PAGE)
    before, tag, after = body.partition(b"<script " + MARKER)
    assert before == PAGE[:PAGE.rindex(b"</body>")] and after.endswith(b"</script></body></html>")
    assert b'data-generation="7"' in after and b'data-instance="1234-abcd"' in after
    assert f'src="{SCRIPT_PATH}"'.encode() in after and f'data-endpoint="{STATUS_PATH}"'.encode() in after
    assert app.result.closed == 1


@pytest.mark.parametrize("page, at", [
    (b"<html><BODY>x</BODY></html>", 13),                                  # any case
    (b'<body><script>var s = "</body>";</script></body></html>', 41),     # the last one
])
def test_injection_point(page, at):
    assert page[at:at + 7].lower() == b"</body>"
    assert inject(page, b"<s>") == page[:at] + b"<s>" + page[at:]


@pytest.mark.parametrize("page", [b"<p>a fragment</p>", b"", PAGE.replace(b"<body>", b"<body " + MARKER + b">")])
def test_a_fragment_or_a_page_with_the_script_already_is_left_as_it_is(page):
    _, headers, body, _ = call(page_app(page))
    assert body == page and headers["content-length"] == str(len(page))


def test_without_content_length_none_is_added():
    _, headers, body, _ = call(page_app(length=False))
    assert MARKER in body and "content-length" not in headers


@pytest.mark.parametrize("content_type, extra, status", [
    ("application/json", [], "200 OK"),
    ("text/plain", [], "200 OK"),
    ("text/html-fragment", [], "200 OK"),
    ("text/html", [("Content-Encoding", "gzip")], "200 OK"),
    ("text/html", [("Content-Range", "bytes 0-10/100")], "206 Partial Content"),
    ("text/html; charset=utf-16", [], "200 OK"),
    ("text/html", [], "204 No Content"),
    ("text/html", [], "302 Found"),
    ("text/html", [], "304 Not Modified"),
])
def test_other_responses_are_passed_through_untouched(content_type, extra, status):
    body = b"" if status.startswith(("204", "304")) else PAGE
    app = page_app(body, content_type, status, extra=extra)
    got: dict[str, Any] = {}
    middleware = LiveReload(app, lambda: STATE)
    env = environment("/")
    result = middleware(env, lambda s, h, e=None: got.update(status=s, headers=h))
    assert result is app.result  # the app's own iterable: file_wrapper and close() as they were
    assert got["status"] == status and got["headers"] == [("Content-Type", content_type), *extra,
                                                          ("Content-Length", str(len(body)))]
    if not status.startswith(("204", "304")):  # the validator refuses a Content-Type on those
        assert call(app)[2] == body


def test_error_pages_get_the_script_so_they_refresh_after_the_fix():
    assert should_inject("500 Internal Server Error", [("Content-Type", "text/html")])
    assert should_inject("404 Not Found", [("content-type", "TEXT/HTML; charset=UTF-8")])
    assert not should_inject("301 Moved Permanently", [("Content-Type", "text/html")])


def test_a_generator_app_that_starts_its_response_lazily():
    closed = []

    def html(environ, start_response):
        try:
            start_response("200 OK", [("Content-Type", "text/html")])
            yield PAGE[:20]
            yield PAGE[20:]
        finally:
            closed.append("html")

    def plain(environ, start_response):
        try:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"one "
            yield b"two"
        finally:
            closed.append("plain")

    assert MARKER in call(html)[2]
    assert call(plain)[2] == b"one two"
    assert closed == ["html", "plain"]


def test_the_legacy_write_callable_is_part_of_the_page():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])
        write(PAGE[:30])
        return [PAGE[30:]]

    _, headers, body, _ = call(app)
    assert body.startswith(PAGE[:30]) and body.endswith(b"</body></html>") and MARKER in body
    assert headers["content-length"] == str(len(body))


def test_an_error_during_the_page_replaces_it():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        yield b"<html><body>half"
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"error"

    status, headers, body, _ = call(app, wrap=True)
    assert status.startswith("500") and body == b"error"


def test_the_status_answers_at_once_with_generation_instance_and_failure():
    failure = {"file": "/srv/app/views.py", "line": "3", "error": "NameError: x", "traceback": "tb",
               "other": object()}
    started = time.monotonic()
    status, headers, body, _ = call(lambda e, s: [], STATUS_PATH, {**STATE, "failure": failure})
    assert time.monotonic() - started < 0.5  # no waiting: the page polls
    assert status == "200 OK" and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    answer = json.loads(body)
    assert answer["instance"] == "1234-abcd" and answer["generation"] == 7 and answer["stopping"] is False
    assert answer["failure"] == {"file": "/srv/app/views.py", "line": 3, "error": "NameError: x",
                                 "traceback": "tb"}
    assert json.loads(call(lambda e, s: [], STATUS_PATH)[2])["failure"] is None


def test_the_script_is_served_and_paths_follow_script_name():
    status, headers, body, _ = call(lambda e, s: [], SCRIPT_PATH)
    assert headers["content-type"].startswith("application/javascript") and b"location.reload()" in body
    _, _, page, _ = call(page_app(), SCRIPT_NAME="/app/")
    assert f'src="/app{SCRIPT_PATH}"'.encode() in page and f'data-endpoint="/app{STATUS_PATH}"'.encode() in page


# -- the mixins -----------------------------------------------------------------------------------------

class FakeServer:
    livereload_instance = "99-feed"


def test_the_worker_mixin_wraps_the_app_and_stores_a_failure():
    worker_class = type("W", (LiveReloadWorker, Worker), {})
    worker = worker_class(FakeServer(), 1, 8001, 4)
    app = worker.wrap_app(page_app())
    assert isinstance(app, LiveReload)
    assert worker.livereload_status() == {"instance": "99-feed", "generation": 4, "failure": None,
                                          "stopping": False}
    assert worker.child_reload_failed({"file": "a.py", "line": 2, "error": "SyntaxError: bad"}) is True
    assert worker.livereload_status()["failure"] == {"file": "a.py", "line": 2, "error": "SyntaxError: bad",
                                                     "traceback": ""}
    assert "reload_failed" in worker.child_help()
    with pytest.raises(TypeError):
        worker.child_reload_failed("not a report")


class RecordingMaster:
    """Stands in for ProjectrServer under LiveReloadServer: records what the mixin asks of it."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, Any]] = []
        self.reloading = False

    def broadcast_async(self, command, *args, timeout, callback):
        self.sent.append((command, args))
        callback({0: True})

    def reload_failed(self, report):
        pass

    def on_reload(self):
        pass

    def worker_ready(self, worker):
        pass


class Master(LiveReloadServer, RecordingMaster):
    pass


class FakeWorker:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def send_control_message(self, command, *args):
        self.messages.append((command, args))


def test_the_master_mixin_broadcasts_a_failure_and_repeats_it_to_a_replacement_worker():
    master = Master(worker_mixins=[object])
    assert master.kwargs["worker_mixins"] == (LiveReloadWorker, object)
    assert master.livereload_instance
    master.reload_failed({"file": "/p/a.py", "line": 1, "error": "SyntaxError: x", "traceback": "t"})
    failure = {"file": "/p/a.py", "line": 1, "error": "SyntaxError: x", "traceback": "t"}
    assert master.sent == [("reload_failed", (failure,))]
    replacement = FakeWorker()
    master.worker_ready(replacement)  # a worker that died was replaced: it shows the failure too
    assert replacement.messages == [("reload_failed", (failure,))]
    master.on_reload()  # the next reload's workers start clean
    successor = FakeWorker()
    master.worker_ready(successor)
    assert successor.messages == []


# -- the flag ---------------------------------------------------------------------------------------------

def test_livereload_is_refused_without_reload(tmp_path):
    for args in (["hello:app", "--livereload"], ["hello:app", "--livereload", "--project", "project.py"]):
        result = run_cli_module(*args, cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--livereload needs --reload" in lines[0], result.stderr
    assert "--livereload" in run_cli_module("--help").stdout


def test_livereload_is_off_by_default():
    from prefork.cli import parse_args

    assert parse_args(["hello:app", "--reload"]).livereload is False
    assert parse_args(["hello:app", "--reload", "--livereload"]).livereload is True
