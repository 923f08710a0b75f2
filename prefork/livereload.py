"""Live reload in the browser (``prefork APP --reload --livereload``, development only).

Every open HTML page refreshes itself once the workers that serve the saved code are ready, and a
failed reload shows its file, line and error in an overlay on the page until the fix is saved.

Three pieces:

- :class:`LiveReload`, a WSGI middleware in each worker (``prefork.livereload_asgi`` has its ASGI
  twin, for the workers of an ASGI app). It adds one ``<script>`` tag before the
  last ``</body>`` of ``text/html`` responses (Content-Length adjusted; every other response is
  passed through untouched, the same iterable object) and answers two reserved paths itself:
  ``/__prefork__/livereload.js`` (the script) and ``/__prefork__/livereload`` (a small JSON status:
  the server instance, the generation whose code this worker serves, and the last failed reload).
- :class:`LiveReloadWorker`, a worker mixin: ``wrap_app`` installs the middleware, and the command
  ``reload_failed`` stores the failure the status reports.
- :class:`LiveReloadServer`, a mixin for :class:`~prefork.server.projectr.ProjectrServer` (see
  :class:`LiveReloadProjectrServer`): its ``reload_failed`` hook sends the failure to every worker.

The status answers at once: it never waits for a change. A request held open would stop a worker
with ``threads=1`` (requests run on its I/O loop, see ``prefork.child.InlineDispatcher``) from
serving anything else, and would keep an old worker from finishing its graceful stop. So the page
polls it (every ``POLL_MS`` while visible, slower when hidden, with a back-off while the server is
unreachable). A reload's old workers stop once every new one is ready and close their idle
keep-alive connections; the page's next poll reaches a new worker, sees a newer generation (or
another server instance, after a restart) and calls ``location.reload()``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prefork.asgi import choose_interface
from prefork.server.projectr import ProjectrServer
from prefork.worker import CommandError

log = logging.getLogger("prefork.livereload")

PREFIX = "/__prefork__/livereload"
STATUS_PATH = PREFIX
SCRIPT_PATH = PREFIX + ".js"
POLL_MS = 300  # the page's poll interval while visible
MARKER = b"data-prefork-livereload"
_TRACEBACK_LIMIT = 20_000  # characters of a failure's traceback sent to the workers and the page

Status = Callable[[], dict[str, Any]]


# -- the middleware (worker) ------------------------------------------------------------------------


class LiveReload:
    """WSGI middleware: the live reload script in HTML pages, and its status and script endpoints.

    ``status()`` returns ``{"instance": str, "generation": int, "failure": dict | None,
    "stopping": bool}``: the server (a restarted server has another instance), the generation whose
    code the worker serves (a roll onto the same code, generation 0's replacement from the warm base,
    keeps it: open pages do not reload for it), the failed reload to show (``file``, ``line``,
    ``error``, ``traceback``), if any, and whether this worker is stopping (the page then asks again
    at once: a new worker answers the next connection).
    """

    def __init__(self, app: Any, status: Status, poll_ms: int = POLL_MS) -> None:
        self.app = app
        self.status = status
        self.poll_ms = poll_ms

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if path == STATUS_PATH:
            return self._status(start_response)
        if path == SCRIPT_PATH:
            return _answer(start_response, "200 OK", "application/javascript; charset=utf-8", SCRIPT.encode())
        response = _Response(start_response, lambda: self.tag(environ))
        result: Iterable[bytes] = self.app(environ, response.start_response)
        if response.passing:
            return result  # decided at start_response: not HTML, the app's own iterable untouched
        return _Injected(result, response)

    def tag(self, environ: dict[str, Any]) -> bytes:
        """The ``<script>`` tag for a page this worker serves."""
        root = (environ.get("SCRIPT_NAME") or "").rstrip("/")
        return script_tag(self.status(), root, str(environ.get("REQUEST_METHOD") or "GET"), self.poll_ms)

    def _status(self, start_response: Any) -> list[bytes]:
        return _answer(start_response, "200 OK", "application/json", status_body(self.status()))


def script_tag(state: dict[str, Any], root: str, method: str, poll_ms: int) -> bytes:
    """The ``<script>`` tag for a page (worker): ``state`` from ``status()``, ``root`` the app's mount point."""
    attributes = {
        "src": root + SCRIPT_PATH,
        "data-endpoint": root + STATUS_PATH,
        "data-instance": str(state.get("instance", "")),
        "data-generation": str(int(state.get("generation", 0))),
        "data-interval": str(poll_ms),
        "data-method": method.upper(),
    }
    text = " ".join(f'{name}="{_escape(value)}"' for name, value in attributes.items())
    return f"<script {MARKER.decode()} {text} defer></script>".encode()


def status_body(state: dict[str, Any]) -> bytes:
    """The status endpoint's JSON (worker), from ``state`` as ``status()`` returns it."""
    failure = state.get("failure")
    return json.dumps(
        {
            "instance": str(state.get("instance", "")),
            "generation": int(state.get("generation", 0)),
            "pid": os.getpid(),
            "failure": _clean_failure(failure) if failure else None,
            "stopping": bool(state.get("stopping", False)),
        }
    ).encode()


def _answer(start_response: Any, status: str, content_type: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return [body]


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def should_inject(status: str, headers: list[tuple[str, str]]) -> bool:
    """True for a response the script goes into: a whole, uncompressed ``text/html`` page.

    2xx pages (but 204 and 206) and error pages (4xx, 5xx: a view's traceback page refreshes once
    the fix is served); never 1xx or 3xx, a compressed body, a range, or a UTF-16/32 page.
    """
    code_text = status.split(None, 1)[0] if status else ""
    code = int(code_text) if code_text.isdigit() else 0
    if not (200 <= code < 300 or code >= 400) or code in (204, 206):
        return False
    content_type = encoding = ""
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower == "content-encoding":
            encoding = value.strip().lower()
        elif lower == "content-range":
            return False
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() != "text/html" or encoding not in ("", "identity"):
        return False
    charset = params.lower().replace(" ", "")
    return not any(wide in charset for wide in ("utf-16", "utf-32", "ucs-2", "ucs2"))


def inject(body: bytes, tag: bytes) -> bytes:
    """``body`` with ``tag`` before its last ``</body>`` (any case); unchanged without one.

    A fragment without ``</body>`` (htmx, Turbo frames) stays as it is, and so does a page that
    already has the script.
    """
    at = body.lower().rfind(b"</body")
    if at < 0 or MARKER in body:
        return body
    return body[:at] + tag + body[at:]


class _Response:
    """The middleware's start_response: pass non-HTML through at once, hold an HTML page's headers."""

    def __init__(self, start_response: Any, tag: Callable[[], bytes]) -> None:
        self.real = start_response
        self.tag = tag
        self.passing = False  # the app's response goes out untouched
        self.holding = False  # an HTML page: headers held until its body is known
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.body: list[bytes] = []  # the held page's body: write() calls, then the iterable

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.passing:  # a second call (with exc_info) after the first passed through
            return self.real(status, headers, exc_info)
        if self.holding and exc_info is None:
            raise AssertionError("start_response called a second time without exc_info")
        if should_inject(status, headers):
            # Nothing was sent yet, so an error page (exc_info) simply replaces the held one.
            self.holding = True
            self.status, self.headers, self.exc_info = status, list(headers), exc_info
            self.body = []
            return self.write
        self.holding = False
        self.passing = True
        return self.real(status, headers, exc_info)

    def write(self, data: bytes) -> None:
        """The legacy write() callable of a held page: part of the body."""
        self.body.append(data)

    def finish(self) -> bytes:
        """Call the real start_response for the held page; return its body with the script in."""
        body = b"".join(self.body)
        page = inject(body, self.tag())
        headers = self.headers
        if page is not body:
            headers = [(name, str(len(page)) if name.lower() == "content-length" else value) for name, value in headers]
        self.real(self.status, headers, self.exc_info)
        return page


class _Injected:
    """The body of a held HTML page, or of a response whose start_response comes with its first chunk.

    ``close()`` closes the app's iterable, once, whichever way the response went.
    """

    def __init__(self, result: Iterable[bytes], response: _Response) -> None:
        self.result = result
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        chunks = iter(self.result)
        for chunk in chunks:
            if response.passing:  # not HTML after all (a generator app), or replaced by exc_info
                yield chunk
                yield from chunks
                return
            response.body.append(chunk)
        if response.holding and not response.passing:
            yield response.finish()
        # Neither: the app never called start_response; the server reports that.

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _clean_failure(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a failed reload's report that the page shows."""
    traceback = str(report.get("traceback") or "")
    if len(traceback) > _TRACEBACK_LIMIT:
        traceback = "...\n" + traceback[-_TRACEBACK_LIMIT:]
    line = report.get("line")
    return {
        "file": str(report["file"]) if report.get("file") else None,
        "line": int(line) if isinstance(line, int) or (isinstance(line, str) and line.isdigit()) else None,
        "error": str(report.get("error") or "the reload failed"),
        "traceback": traceback,
    }


# -- the worker mixin (worker) ----------------------------------------------------------------------


class LiveReloadWorker:
    """Worker mixin: serve through :class:`LiveReload` (or, for an ASGI app, its twin
    :class:`~prefork.livereload_asgi.AsgiLiveReload`); ``reload_failed`` stores what the page shows."""

    livereload_failure: dict[str, Any] | None = None

    def wrap_app(self, app: Any) -> Any:
        """Worker: the app behind the live reload middleware of its interface."""
        app = super().wrap_app(app)  # type: ignore[misc]
        interface = getattr(getattr(self, "server", None), "interface", "auto")
        if choose_interface(app, interface) == "asgi":
            from prefork.livereload_asgi import AsgiLiveReload  # imports uvicorn: ASGI workers only

            return AsgiLiveReload(app, self.livereload_status)
        return LiveReload(app, self.livereload_status)

    def livereload_status(self) -> dict[str, Any]:
        """Worker: what the status endpoint reports."""
        server = getattr(self, "server", None)
        runtime = getattr(self, "_runtime", None)  # prefork.child.Runtime, in the worker
        return {
            "instance": getattr(server, "livereload_instance", ""),
            "generation": getattr(self, "code_generation", 0),
            "failure": self.livereload_failure,
            "stopping": bool(getattr(runtime, "draining", False)),
        }

    def child_reload_failed(self, report: dict[str, Any]) -> bool:
        """Command: a reload failed (``report``: file, line, error, traceback); pages show it."""
        if not isinstance(report, dict):
            raise TypeError("reload_failed takes the failure report, a dict")
        self.livereload_failure = _clean_failure(report)
        return True


# -- the master mixin (master) ----------------------------------------------------------------------


class LiveReloadServer:
    """ProjectrServer mixin: the workers serve pages with live reload and learn of failed reloads.

    Place it before ``ProjectrServer`` (:class:`LiveReloadProjectrServer` does). The failure of the
    last reload is also sent to a worker that starts while it stands (one replacing a worker that
    died); a reload that starts clears it, and one that fails again sends its own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["worker_mixins"] = (LiveReloadWorker, *kwargs.get("worker_mixins", ()))
        super().__init__(*args, **kwargs)
        # Another value after a restart: open pages reload although the generations start over.
        self.livereload_instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._livereload_failure: dict[str, Any] | None = None

    def reload_failed(self, report: dict[str, Any]) -> None:
        """Master: send the failure to every worker (the pages poll it)."""
        super().reload_failed(report)  # type: ignore[misc]
        failure = _clean_failure(report)
        self._livereload_failure = failure
        self.broadcast_async(  # type: ignore[attr-defined]  # a mixin of Server
            "reload_failed",
            failure,
            timeout=5.0,
            callback=_log_command_errors,
        )

    def on_reload(self) -> None:
        """Master: a reload starts; its workers will not show the last failure."""
        self._livereload_failure = None
        super().on_reload()  # type: ignore[misc]

    def worker_ready(self, worker: Any) -> None:
        """Master: a worker that replaces a dead one shows the failure that stands too."""
        super().worker_ready(worker)  # type: ignore[misc]
        if self._livereload_failure is not None and not getattr(self, "reloading", False):
            worker.send_control_message("reload_failed", self._livereload_failure)


def _log_command_errors(results: dict[int, Any]) -> None:
    for index, result in results.items():
        if isinstance(result, CommandError):
            log.warning("worker %d did not take the failed reload: %s", index, result)


class LiveReloadProjectrServer(LiveReloadServer, ProjectrServer):
    """A ProjectrServer whose workers serve pages that refresh themselves after each reload."""


# -- the page's script ----------------------------------------------------------------------------------

SCRIPT = r"""// prefork live reload: refresh this page when the server serves new code; show failed reloads.
(function () {
  "use strict";
  if (window.__preforkLiveReload) return;
  var me = document.currentScript || document.querySelector("script[data-prefork-livereload]");
  if (!me) return;
  var state = window.__preforkLiveReload = {
    endpoint: me.getAttribute("data-endpoint"),
    instance: me.getAttribute("data-instance"),
    generation: parseInt(me.getAttribute("data-generation"), 10) || 0,
    interval: parseInt(me.getAttribute("data-interval"), 10) || 300,
    method: me.getAttribute("data-method") || "GET",
    polls: 0,
    failure: null
  };
  var HIDDEN_MS = 2000, MAX_BACKOFF_MS = 5000, STOPPING_MS = 30, OVERLAY = "prefork-livereload-overlay";
  var delay = state.interval, timer = null;

  var RELOADS_KEY = "prefork-livereload-reloads", WINDOW_MS = 10000, MAX_RELOADS = 20;

  function recentReloads() {
    try {
      var now = Date.now();
      return JSON.parse(sessionStorage.getItem(RELOADS_KEY) || "[]").filter(function (t) {
        return now - t < WINDOW_MS;
      });
    } catch (e) {
      return [];
    }
  }

  // Returns true when the page goes away, false when the reload is held back.
  function reload(why) {
    // Two servers behind one address would reload each other's pages for ever: at most 20 in 10 s.
    var times = recentReloads();
    if (times.length >= MAX_RELOADS) {
      console.warn("prefork live reload: " + times.length + " reloads in 10 s, holding back (" + why + ")");
      return false;
    }
    times.push(Date.now());
    try { sessionStorage.setItem(RELOADS_KEY, JSON.stringify(times)); } catch (e) { /* private mode */ }
    if (state.method === "GET" || state.method === "HEAD") {
      location.reload();
    } else {
      location.replace(location.href.split("#")[0]);  // the page of a POST: GET it, never resubmit
    }
    return true;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, document.hidden ? Math.max(ms, HIDDEN_MS) : ms);
  }

  function poll() {
    var url = state.endpoint + (state.endpoint.indexOf("?") < 0 ? "?" : "&") + "seen=" + state.generation;
    fetch(url, {cache: "no-store", credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (status) {
        state.polls += 1;
        delay = state.interval;
        if (status.instance !== state.instance && reload("the server restarted")) return;
        if (status.generation > state.generation && reload("generation " + status.generation)) return;
        // An older generation is a worker that stops once the new ones are ready: ignore it.
        if (status.instance === state.instance && status.generation === state.generation) show(status.failure);
        // A stopping worker (its successor is ready): the next connection reaches a new one.
        schedule(status.stopping ? STOPPING_MS : delay);
      }, function () {
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);  // the server is restarting or gone
        schedule(delay);
      });
  }

  function element(tag, style, text) {
    var node = document.createElement(tag);
    node.setAttribute("style", style);
    if (text) node.textContent = text;
    return node;
  }

  function show(failure) {
    var key = failure ? JSON.stringify(failure) : null;
    if (key === state.failure) return;
    state.failure = key;
    var old = document.getElementById(OVERLAY);
    if (old) old.parentNode.removeChild(old);
    if (!failure) return;
    var mono = "font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;margin:0;";
    var box = element("div", "position:fixed;inset:0;z-index:2147483647;background:rgba(20,20,24,.92);" +
      "color:#eee;overflow:auto;padding:32px;box-sizing:border-box;font:15px/1.4 system-ui,sans-serif;");
    box.id = OVERLAY;
    box.setAttribute("role", "alert");
    box.appendChild(element("div", "color:#ff6b6b;font-weight:600;font-size:18px;margin-bottom:12px;",
      "Reload failed: the old code keeps serving"));
    var where = failure.file ? failure.file + (failure.line ? ":" + failure.line : "") : "";
    var head = element("div", mono + "color:#ffd166;font-size:15px;margin-bottom:8px;", where);
    head.className = "prefork-livereload-where";
    box.appendChild(head);
    var error = element("div", mono + "font-size:15px;margin-bottom:16px;", failure.error);
    error.className = "prefork-livereload-error";
    box.appendChild(error);
    if (failure.traceback) box.appendChild(element("pre", mono + "color:#bbb;", failure.traceback));
    box.appendChild(element("div", "margin-top:20px;color:#999;",
      "Save a fix: this page reloads once it is served."));
    (document.body || document.documentElement).appendChild(box);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule(0);
  });
  schedule(state.interval);
})();
"""
