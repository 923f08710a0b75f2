"""Real apps, real saves: what a reloading server serves must be what a fresh start serves.

The one assertion that counts here is ``assert_serves_like_fresh``: after a save, every page on
every worker of the running (reloading) server must equal, byte for byte after normalization, the
page a server started from scratch on the same files serves. "The log says reloaded" is never
evidence; the pages are.

Pieces (all reusable outside tests/realapps):

- ``ServerProcess(app_dir, app_spec)``: ``python -m prefork APP --reload -w 2 -p PORT --pid FILE``
  run with cwd=app_dir in its own session, output in a log file. ``start()`` waits (deadline, HTTP
  poll) until every worker port answers (worker i listens on PORT+i); ``stop()`` TERMs the process
  group, waits with a deadline, then KILLs the group. ``log_text()``, ``log_mark()``,
  ``wait_log(pattern, since=mark)``, ``restart()``.
- ``fetch_pages(base_url, paths, headers=, normalize=)`` -> ``{path: (status, body)}``; bodies are
  text passed through ``normalize`` (default: CSRF tokens replaced by a placeholder).
- ``fresh_pages(app_dir, app_spec, paths)``: start a server without ``--reload`` on other ports on
  the same files, fetch every page from every worker (the workers must agree, else the app is not
  deterministic and the harness says so), stop it.
- ``assert_serves_like_fresh(server, app_dir, app_spec, paths, timeout=15)``: fresh pages once, then
  poll every worker of ``server`` until every page equals them on two sweeps in a row; at the
  deadline fail with the mismatching pages, a unified diff of the first one and the log's tail.
  ``changed_from=pages`` also asserts the fresh pages differ from ``pages`` (an edit that changes
  nothing visible would make the test vacuous). ``assert_serves(server, expected, paths)`` is the
  poll without the fresh start; ``assert_serves_now`` checks once (a broken save: the old pages).
- ``edit(path, old, new, atomic=False)`` and ``write_file(path, text, atomic=False)``: save like an
  editor, in place or (``atomic=True``) to a temporary file renamed over the original, and make the
  mtime's whole second differ from the previous one, so a fresh interpreter never trusts a stale
  ``.pyc`` (CPython's pyc check is mtime seconds + size).
- ``free_port_block(n)``: a base port with n consecutive free ports, below the ephemeral range.

Validating the harness itself (no fixed server needed): ``tests/realapps/test_plain.py`` has
self-tests (two fresh starts agree; a restart after an edit passes; a server that cannot reload
fails with a diff). ``REALAPPS_RESTART=1 pytest tests/realapps`` runs every scenario with a restart
of the server in place of the reload, which is the oracle: every test must pass in that mode.
"""

from __future__ import annotations

import difflib
import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from tests.integration.integration_util import free_ports

PYTHON = sys.executable
START_TIMEOUT = 45.0    # seconds for a server to answer on every port (Django on 2 busy cores)
STOP_TIMEOUT = 10.0     # seconds between TERM and KILL
POLL_INTERVAL = 0.05    # seconds between polls inside a deadline loop
LOG_TAIL_LINES = 60
SWEEP_REQUEST_TIMEOUT = 5.0  # seconds per request in a comparison sweep (a hung worker costs this once)

Pages = dict[str, tuple[int | None, str]]
Normalize = Callable[[str], str]

__all__ = ["ServerProcess", "fetch_pages", "fresh_pages", "assert_serves_like_fresh", "assert_serves",
           "assert_serves_now", "edit", "write_file", "free_port_block", "normalize_default",
           "restart_mode", "HarnessError"]


class HarnessError(AssertionError):
    """The harness itself cannot do its job (a server that does not start, a nondeterministic app)."""


def restart_mode() -> bool:
    """True when REALAPPS_RESTART=1: scenarios restart the server instead of relying on reload."""
    return os.environ.get("REALAPPS_RESTART", "") not in ("", "0")


# --- ports -------------------------------------------------------------------------------------

def free_port_block(count: int) -> int:
    """A base port such that base .. base+count-1 are free on 127.0.0.1 right now (below the ephemeral
    range: the end-to-end tests' helper)."""
    return free_ports(count)


# --- the server process ------------------------------------------------------------------------

def _http_get(port: int, path: str, headers: Mapping[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class ServerProcess:
    """``python -m prefork APP`` in ``app_dir``, in its own session; see the module docstring."""

    def __init__(self, app_dir: Path | str, app_spec: str, *, reload: bool = True, workers: int = 2,
                 extra_args: Iterable[str] = (), run_dir: Path | str | None = None,
                 env: Mapping[str, str] | None = None, name: str = "server") -> None:
        self.app_dir = Path(app_dir)
        self.app_spec = app_spec
        self.reload = reload
        self.workers = workers
        self.extra_args = list(extra_args)
        # Logs and pid files live next to the app, never in it: the watcher must not see them.
        self.run_dir = Path(run_dir) if run_dir else self.app_dir.parent / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0
        self.log_path = self.run_dir / f"{name}.log"
        self.pid_file = self.run_dir / f"{name}.pid"

    # The command, as a user would type it (plus the port and pid file of this run).
    def command(self) -> list[str]:
        args = [PYTHON, "-m", "prefork", self.app_spec]
        if self.reload:
            args.append("--reload")
        # A port per worker: every worker is asked for every page.
        args += ["-w", str(self.workers), "-p", str(self.port), "--port-per-worker", "--pid", str(self.pid_file)]
        return args + self.extra_args

    @property
    def ports(self) -> list[int]:
        return [self.port + i for i in range(self.workers)]

    def base_url(self, worker: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[worker]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> "ServerProcess":
        """Start on free ports and wait until every worker port answers HTTP (any status)."""
        for attempt in range(4):
            self.port = free_port_block(self.workers)
            self.starts += 1
            with open(self.log_path, "ab") as out:
                out.write(f"===== start #{self.starts}: {' '.join(self.command())} (cwd {self.app_dir})\n"
                          .encode())
                out.flush()
                self.proc = subprocess.Popen(
                    self.command(), cwd=self.app_dir, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
            try:
                self._wait_ready(timeout)
                return self
            except HarnessError:
                lost_port_race = not self.alive() and "in use" in self.log_text()[-2000:]
                self.stop()
                if lost_port_race and attempt < 3:
                    continue
                raise
        raise HarnessError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.ports)
        last_error: BaseException | None = None
        while pending:
            if not self.alive():
                raise HarnessError(f"{self.name} exited with status {self.proc.returncode} before serving"
                                   f"\n{self.log_tail()}")
            for port in sorted(pending):
                try:
                    _http_get(port, "/", timeout=5.0)
                    pending.discard(port)
                except (OSError, http.client.HTTPException) as exc:
                    last_error = exc
            if not pending:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: ports {sorted(pending)} did not answer within {timeout} s "
                                   f"(last error: {last_error!r})\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """TERM the process group, wait up to ``timeout``, then KILL whatever is left of the group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the master leads its own group and session
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # KILL the group even after a clean exit: a worker or helper the master left behind dies too.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    # --- the log ---
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- {self.name} log ({self.log_path}), last {len(tail)} lines ---\n" + "\n".join(tail)

    def log_mark(self) -> int:
        """An offset into the log; ``wait_log(..., since=mark)`` only looks at what came after it."""
        return len(self.log_text())

    def wait_log(self, pattern: str | re.Pattern, since: int = 0, timeout: float = 15.0,
                 what: str | None = None) -> re.Match:
        """Wait (deadline) until ``pattern`` matches the log written after ``since``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text()[since:])
            if match:
                return match
            if not self.alive():
                raise AssertionError(f"{self.name} exited (status {self.proc and self.proc.returncode}) "
                                     f"while waiting for {what or regex.pattern!r}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s log did not show {what or regex.pattern!r} within "
                                     f"{timeout} s\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- pages -------------------------------------------------------------------------------------

_CSRF_PATTERNS = [
    (re.compile(r'(name="csrfmiddlewaretoken"\s+value=")[^"]*(")'), r"\1<csrf>\2"),
    (re.compile(r'(value=")[^"]*("\s+name="csrfmiddlewaretoken")'), r"\1<csrf>\2"),
    (re.compile(r'(name="csrf_token"[^>]*value=")[^"]*(")'), r"\1<csrf>\2"),
]


def normalize_default(body: str) -> str:
    """Replace per-request CSRF tokens (Django's masked token, Flask-WTF's) by a placeholder."""
    for regex, replacement in _CSRF_PATTERNS:
        body = regex.sub(replacement, body)
    return body


def fetch_pages(base_url: str, paths: Iterable[str], *, headers: Mapping[str, str] | None = None,
                normalize: Normalize | None = normalize_default, timeout: float = 10.0,
                stop_on_error: bool = False) -> Pages:
    """GET every path from ``base_url`` ("http://127.0.0.1:PORT"): {path: (status, text)}.

    A connection error or timeout is a page too: status None, the error as its body (so it shows
    in a diff). ``stop_on_error``: after the first such page, the remaining paths are not asked
    (a hung worker would make each of them wait ``timeout``) and are reported as skipped.
    """
    match = re.fullmatch(r"http://([^:/]+):(\d+)/?", base_url)
    if not match:
        raise ValueError(f"base_url must look like http://127.0.0.1:PORT, not {base_url!r}")
    port = int(match.group(2))
    pages: Pages = {}
    failed = False
    for path in paths:
        if failed and stop_on_error:
            pages[path] = (None, "<not asked: an earlier page of this worker got no answer>")
            continue
        try:
            status, raw = _http_get(port, path, headers, timeout)
            text = raw.decode("utf-8", "replace")
            pages[path] = (status, normalize(text) if normalize else text)
        except (OSError, http.client.HTTPException) as exc:
            pages[path] = (None, f"<no answer: {exc!r}>")
            failed = True
    return pages


def _diff(path: str, expected: tuple[int | None, str], got: tuple[int | None, str],
          max_lines: int = 80) -> str:
    lines = [f"  {path}: status fresh={expected[0]} served={got[0]}"]
    diff = list(difflib.unified_diff(expected[1].splitlines(), got[1].splitlines(),
                                     "fresh start", "served", lineterm="", n=2))
    if len(diff) > max_lines:
        diff = diff[:max_lines] + [f"... ({len(diff) - max_lines} more diff lines)"]
    lines += ["    " + line for line in diff] or ["    (bodies equal)"]
    return "\n".join(lines)


def _mismatches(server: ServerProcess, expected: Pages, paths: list[str], headers, normalize,
                ) -> list[tuple[int, str, tuple[int | None, str]]]:
    found = []
    for worker in range(server.workers):
        got = fetch_pages(server.base_url(worker), paths, headers=headers, normalize=normalize,
                          timeout=SWEEP_REQUEST_TIMEOUT, stop_on_error=True)
        found += [(worker, path, got[path]) for path in paths if got[path] != expected[path]]
    return found


def _report(server: ServerProcess, expected: Pages, mismatches, headline: str,
            log_lines: int = LOG_TAIL_LINES) -> str:
    worker, path, got = mismatches[0]
    by_worker: dict[int, list[str]] = {}
    for w, p, _ in mismatches:
        by_worker.setdefault(w, []).append(p)
    summary = "; ".join(f"worker {w} (port {server.ports[w]}): {', '.join(ps)}"
                        for w, ps in sorted(by_worker.items()))
    return (f"{headline}\nmismatching pages: {summary}\n"
            f"first mismatch, worker {worker} (port {server.ports[worker]}):\n"
            f"{_diff(path, expected[path], got)}" + (f"\n{server.log_tail(log_lines)}" if log_lines else ""))


def assert_serves_now(server: ServerProcess, expected: Pages, paths: Iterable[str] | None = None, *,
                      headers: Mapping[str, str] | None = None,
                      normalize: Normalize | None = normalize_default, what: str = "the expected pages",
                      log_lines: int = LOG_TAIL_LINES) -> None:
    """One sweep: every worker serves ``expected`` right now (no polling)."""
    paths = list(paths if paths is not None else expected)
    mismatches = _mismatches(server, expected, paths, headers, normalize)
    if mismatches:
        raise AssertionError(_report(server, expected, mismatches, f"{server.name} does not serve {what}",
                                     log_lines))


def assert_serves(server: ServerProcess, expected: Pages, paths: Iterable[str] | None = None, *,
                  timeout: float = 15.0, headers: Mapping[str, str] | None = None,
                  normalize: Normalize | None = normalize_default, what: str = "the fresh start's pages",
                  ) -> None:
    """Poll every worker until all ``paths`` equal ``expected`` on two sweeps in a row (deadline)."""
    paths = list(paths if paths is not None else expected)
    deadline = time.monotonic() + timeout
    good_sweeps = 0
    while True:
        if not server.alive():
            raise AssertionError(f"{server.name} is not running (status "
                                 f"{server.proc and server.proc.returncode})\n{server.log_tail()}")
        mismatches = _mismatches(server, expected, paths, headers, normalize)
        good_sweeps = 0 if mismatches else good_sweeps + 1
        if good_sweeps >= 2:
            return
        if time.monotonic() > deadline:
            if not mismatches:  # the first good sweep came just at the deadline: give it one more
                mismatches = _mismatches(server, expected, paths, headers, normalize)
                if not mismatches:
                    return
            raise AssertionError(_report(server, expected, mismatches,
                                         f"{server.name} did not serve {what} within {timeout} s"))
        time.sleep(POLL_INTERVAL)


def fresh_pages(app_dir: Path | str, app_spec: str, paths: Iterable[str], *,
                headers: Mapping[str, str] | None = None, normalize: Normalize | None = normalize_default,
                workers: int = 2, extra_args: Iterable[str] = (), run_dir: Path | str | None = None,
                name: str = "fresh") -> Pages:
    """The pages a server started from scratch on ``app_dir``'s current files serves."""
    paths = list(paths)
    fresh = ServerProcess(app_dir, app_spec, reload=False, workers=workers, extra_args=extra_args,
                          run_dir=run_dir, name=name)
    with fresh:
        pages = [fetch_pages(fresh.base_url(w), paths, headers=headers, normalize=normalize)
                 for w in range(workers)]
    for w in range(1, workers):
        for path in paths:
            if pages[w][path] != pages[0][path]:
                raise HarnessError(f"two workers of one fresh start disagree on {path}: the page is not "
                                   f"deterministic (normalize it)\n{_diff(path, pages[0][path], pages[w][path])}")
    for path, (status, body) in pages[0].items():
        if status is None:
            raise HarnessError(f"the fresh start did not answer {path}: {body}\n{fresh.log_tail()}")
    return pages[0]


def assert_serves_like_fresh(server: ServerProcess, app_dir: Path | str, app_spec: str,
                             paths: Iterable[str], timeout: float = 15.0, *,
                             headers: Mapping[str, str] | None = None,
                             normalize: Normalize | None = normalize_default,
                             changed_from: Pages | None = None, fresh_args: Iterable[str] = ()) -> Pages:
    """Every worker of ``server`` serves what a fresh start on the same files serves (see module doc).

    Returns the fresh pages. ``changed_from``: also require the fresh pages to differ from these
    on at least one path (the edit under test is visible, so the test is not vacuous).
    """
    paths = list(paths)
    expected = fresh_pages(app_dir, app_spec, paths, headers=headers, normalize=normalize,
                           workers=server.workers, extra_args=fresh_args, run_dir=server.run_dir,
                           name=f"{server.name}-fresh")
    if changed_from is not None and all(changed_from.get(p) == expected[p] for p in paths):
        raise HarnessError("the edit changed no page: a fresh start serves exactly the pages of before, "
                           "so this check would prove nothing")
    assert_serves(server, expected, paths, timeout=timeout, headers=headers, normalize=normalize)
    return expected


# --- saving files like an editor ---------------------------------------------------------------

def write_file(path: Path | str, text: str, *, atomic: bool = False) -> None:
    """Save ``text`` to ``path`` in place (truncate + write) or atomically (temp file + rename).

    The new mtime is moved to a later whole second than the old one when the clock has not
    ticked past it yet, so CPython's pyc check (mtime seconds + size) never accepts a stale cache.
    """
    path = Path(path)
    old_ns = path.stat().st_mtime_ns if path.exists() else 0
    if atomic:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.swp")
        with open(tmp, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    else:
        with open(path, "w") as out:
            out.write(text)
    new_ns = path.stat().st_mtime_ns
    if old_ns and new_ns // 10**9 <= old_ns // 10**9:
        bumped = (old_ns // 10**9 + 1) * 10**9 + 1000
        os.utime(path, ns=(bumped, bumped))


def edit(path: Path | str, old: str, new: str, *, atomic: bool = False, count: int = 1) -> str:
    """Replace ``old`` by ``new`` in ``path`` (``old`` must be there) and save; return the new text."""
    path = Path(path)
    text = path.read_text()
    assert old in text, f"edit: {old!r} is not in {path}"
    text = text.replace(old, new, count)
    write_file(path, text, atomic=atomic)
    return text
