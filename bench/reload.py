"""Reload latency: from the write of a file to the moment every worker serves the new code.

"Every worker" = 2 * workers consecutive responses, each on a fresh connection, all new. A background
client (bench/bgclient.py, its own process) sends a request every few ms and counts the failures inside
each window. Peers and ours are started in turn, round after round (alternating), on their own copy of
the tree; the time from spawn to the first 200 is recorded as the cold start.
"""
from __future__ import annotations

import datetime
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.procs import Response, Spawned, free_port, http_get, parse_version, session_pids, spawn
from bench.refapp import LEAF, ROOT, DEFINITION, RefApp, set_mark, touch_definition
from bench.runners import HERE, Runner

BG_INTERVAL = 0.005  # background client: one request every 5 ms, about 150/s with its own cost
# The probe pauses this long after an answer that is still old (and after a failed request), so that
# on 2 shared cores it does not keep a whole core busy (itself plus the worker answering it) while the
# server under test imports the new code: the resolution of every latency is that pause plus one request.
PROBE_PAUSE = 0.005


@dataclass
class ReloadSample:
    """One edit of one server."""

    runner: str
    edit: str
    round: int
    latency: float | None        # write -> first response of the final all-new streak (s); None: never
    first_new: float | None      # write -> first new response (s)
    failed: int                  # background requests that failed inside the window
    requests: int                # background requests inside the window
    stall: float                 # longest background request inside the window (s): queued, not failed
    probe_errors: int            # the prober's own failed requests
    workers_restarted: bool      # pids serving after the window differ from before
    phases: dict = field(default_factory=dict)  # ours: parsed from the server log (ms)


@dataclass
class ColdStart:
    runner: str
    round: int
    seconds: float


class Edit:
    """An edit the bench applies to a tree, and how to recognise the new code in a response."""

    def __init__(self, name: str, apply: Callable[[Path, int], None],
                 is_new: Callable[[tuple[str, str, int], int, set[int]], bool]):
        self.name, self.apply, self.is_new = name, apply, is_new


EDITS = {
    "leaf": Edit("leaf", lambda tree, n: set_mark(tree / LEAF, f"l{n}", n),
                 lambda v, n, old: v[1] == f"l{n}"),
    # The same leaf edit as the first reload after start: ours then also checks every project file
    # once (the watcher cannot vouch for what happened before it existed). Peers restart every time.
    "first-leaf": Edit("first-leaf", lambda tree, n: set_mark(tree / LEAF, f"l{n}", n),
                       lambda v, n, old: v[1] == f"l{n}"),
    "root": Edit("root", lambda tree, n: set_mark(tree / ROOT, f"r{n}", n),
                 lambda v, n, old: v[0] == f"r{n}"),
    # The definition file changes nothing that is served: new = answered by a process born after the edit.
    "definition": Edit("definition", lambda tree, n: touch_definition(tree / DEFINITION, n),
                       lambda v, n, old: v[2] not in old),
}


class BackgroundClient:
    """bench/bgclient.py against one port; `window(t0, t1)` reads its record after stop()."""

    def __init__(self, port: int, logdir: Path, name: str, path: str = "/hello"):
        self.out = logdir / f"{name}.bg.txt"
        self.proc: Spawned = spawn([sys.executable, str(HERE / "bgclient.py"), str(port), path,
                                    str(self.out), str(BG_INTERVAL)], str(logdir), {}, logdir / "bgclient.log")
        self.records: list[tuple[float, float, int]] = []

    def stop(self) -> None:
        self.proc.stop()
        try:
            lines = self.out.read_text().split()
        except FileNotFoundError:
            lines = []
        self.records = [(float(lines[i]), float(lines[i + 1]), int(lines[i + 2]))
                        for i in range(0, len(lines) - 2, 3)]

    def window(self, t0: float, t1: float) -> tuple[int, int, float]:
        """(failed, total, longest) among the requests started between t0 and t1."""
        inside = [r for r in self.records if t0 <= r[0] <= t1]
        longest = max((r[1] - r[0] for r in inside), default=0.0)
        return sum(1 for r in inside if r[2] != 200), len(inside), longest


# The server's one line per reload (prefork.server.projectr), e.g.
#   reload #1: 3 modules (refproj.views.index, refproj.urls, refproj.app) in 94 ms; 2 workers replaced (generation 1)
#   reload #2: fresh generation (partial refused: polls.admin is imported by ...) in 157 ms; 2 workers replaced (generation 2)
#   reload #3: workers respawned (polls.views: the changed modules are imported by ...) in 37 ms; 2 workers replaced (generation 3)
_RELOAD_LINE = re.compile(r"reload #(\d+): (.*) in ([\d.]+) ?ms; (\d+) workers? replaced \(generation (\d+)\)")
_HOW_PARTIAL = re.compile(r"^(\d+) modules? \((.*)\)$")
_HOW_FRESH = re.compile(r"^fresh generation \((.*)\)$")
_HOW_RESPAWN = re.compile(r"^workers respawned \((.*)\)$")
_FAILED_LINE = re.compile(r"reload #(\d+) failed")
# --log-level debug: the plan, and each generation's report (a refused partial is followed by a fresh one)
_PLAN_LINE = re.compile(r"reload #(\d+): (respawn|partial|fresh|resume) \((.*)\)\s*$")
_GEN_LINE = re.compile(r"generation (\d+) \((\w+)\) (ready|refused|failed) after ([\d.]+) ?ms "
                       r"\(its own work: ([\d.]+) ?ms\)")
_WOKE_LINE = re.compile(r"watcher woke at ([\d.]+)")
# Log events of one reload, in the order they happen; each phase ends at its event:
# the write -> the watcher fd wakes the master (bench/ours_serve.py only) -> changed_files() returns
# (debounce) -> the reload is planned (debug line) -> the new generation reports ready (partial, fresh,
# or the probe of a respawn) -> the roll starts -> the last successor reports ready -> the reload line
# -> the last old worker exits.
PHASES = ["watcher_wake", "changed_files", "planned", "generation_ready", "rolling", "workers_ready",
          "reload_logged", "old_retired"]
STRATEGIES = ("partial", "fresh", "respawn")


def reload_line(line: str) -> dict | None:
    """The strategy, reason and numbers of the server's own `reload #N: <how> in X ms; ...` line."""
    m = _RELOAD_LINE.search(line)
    if not m:
        return None
    how = m.group(2)
    out: dict = dict(number=int(m.group(1)), server_ms=float(m.group(3)), replaced=int(m.group(4)),
                     generation=int(m.group(5)), line=line[line.index("reload #"):][:200])
    partial, fresh, respawn = _HOW_PARTIAL.match(how), _HOW_FRESH.match(how), _HOW_RESPAWN.match(how)
    if partial:
        out.update(strategy="partial", modules=int(partial.group(1)), reason="")
    elif fresh:
        out.update(strategy="fresh", reason=fresh.group(1))
    elif respawn:
        reason = respawn.group(1)
        out.update(strategy="respawn", reason=reason.split(": ", 1)[1] if ": " in reason else reason)
    else:
        out.update(strategy="?", reason=how)
    return out


def _line_time(line: str) -> float | None:
    """The time a log line was written: bench/ours_serve.py's `%(created)f`, or logging's default asctime
    (`2026-11-27 04:03:59,210`, local time, as the prefork CLI writes it)."""
    head = line.split(" ", 2)
    try:
        return float(head[0])
    except ValueError:
        pass
    try:
        return datetime.datetime.strptime(" ".join(head[:2]), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def parse_phases(log_tail: str, t0_wall: float) -> dict:
    """Our reload, from the server log written since the edit: strategy, reason, server ms, phases (ms).

    The first reload after the write is the edit's; its phases run from one event to the next (see
    PHASES), the first from the write. `reloads` counts every reload line in the tail (more than one:
    a change was served in two steps, or a second reload followed), `failed` the failed ones.
    """
    times: dict[str, float] = {}
    out: dict = {"reloads": 0, "failed": 0, "generations": []}
    number, later = None, False
    for line in log_tail.splitlines():
        created = _line_time(line)
        if created is None:
            continue
        done = "reload_logged" in times
        plan, reload, woke = _PLAN_LINE.search(line), reload_line(line), _WOKE_LINE.search(line)
        if reload:
            out["reloads"] += 1
        if _FAILED_LINE.search(line):
            out["failed"] += 1
        if done:
            later = later or bool(plan or woke)  # the next reload starts: its exits are its own
            if "exited with status" in line and not later:
                times["old_retired"] = created
            continue
        if woke and "watcher_wake" not in times:
            times.update(watcher_wake=float(woke.group(1)), changed_files=created)
        elif plan and number is None:
            number = int(plan.group(1))
            times["planned"] = created
            out.update(plan=plan.group(2), plan_reason=plan.group(3))
        elif _GEN_LINE.search(line):
            gen = _GEN_LINE.search(line)
            out["generations"].append(dict(kind=gen.group(2), event=gen.group(3), after_ms=float(gen.group(4)),
                                           own_ms=float(gen.group(5))))
            if gen.group(3) == "ready":
                times["generation_ready"] = created
        elif "rolling to generation" in line:
            times["rolling"] = created
        elif ") ready (generation" in line:
            times["workers_ready"] = created
        elif reload and (number is None or reload["number"] == number):
            times["reload_logged"] = created
            out.update(reload)
    previous = t0_wall
    for name in PHASES:
        if name in times:
            out[f"t_{name}"] = (times[name] - previous) * 1000
            previous = times[name]
    ready = [g for g in out["generations"] if g["event"] == "ready"]
    if ready:
        out["generation_own_ms"] = ready[-1]["own_ms"]
        out["generation_after_ms"] = ready[-1]["after_ms"]
    refused = [g for g in out["generations"] if g["event"] == "refused"]
    if refused:
        out["refused_after_ms"] = refused[0]["after_ms"]
    return out


def probe(port: int, need: int, is_new: Callable[[tuple[str, str, int]], bool], t0: float,
          timeout: float) -> tuple[float | None, float | None, int, set[int]]:
    """Poll / on fresh connections until `need` consecutive new answers or timeout.

    Returns (latency, first_new, errors, pids seen) with times relative to t0.
    """
    pids: set[int] = set()

    def check(r: Response) -> bool | None:
        v = parse_version(r.body) if r.status == 200 else None
        if v is None:
            return None
        pids.add(v[2])
        return is_new(v)

    latency, first_new, errors = probe_page(port, "/", need, check, t0, timeout)
    return latency, first_new, errors, pids


def probe_page(port: int, path: str, need: int, check: Callable[[Response], bool | None], t0: float,
               timeout: float) -> tuple[float | None, float | None, int]:
    """GET `path` on fresh connections until `need` consecutive answers are new, or timeout.

    `check(response)` says new (True), old (False: PROBE_PAUSE before the next request) or failed
    (None: an error, counted, and the same pause, so that a down server does not spin the shared CPU). Returns (latency: t0 -> the first
    answer of the final all-new streak, first_new: t0 -> the first new answer, errors), in seconds.
    """
    streak, streak_start, first_new, errors = 0, 0.0, None, 0
    while time.monotonic() < t0 + timeout:
        r = http_get(port, path, timeout=max(0.5, t0 + timeout - time.monotonic()))
        verdict = check(r)
        if verdict is None:
            streak, errors = 0, errors + 1
            time.sleep(PROBE_PAUSE or 0.002)
            continue
        if not verdict:
            streak = 0
            if PROBE_PAUSE:
                time.sleep(PROBE_PAUSE)
            continue
        if streak == 0:
            streak_start = r.done
        first_new = first_new if first_new is not None else r.done - t0
        streak += 1
        if streak >= need:
            return streak_start - t0, first_new, errors
    return None, first_new, errors


def measure_edit(runner: Runner, app: RefApp, port: int, proc: Spawned, edit: Edit, serial: int, round_no: int, timeout: float) -> tuple[ReloadSample, tuple]:
    """Apply one edit and time it; returns the sample and its window (for the background client)."""
    old = set(session_pids(proc.pid))
    log_offset = len(proc.log_text())
    t0_wall, t0 = time.time(), time.monotonic()
    edit.apply(Path(app.tree), serial)
    latency, first_new, errors, pids = probe(port, 2 * runner.workers,
                                             lambda v: edit.is_new(v, serial, old), t0, timeout)
    t1 = time.monotonic()
    sample = ReloadSample(runner.name, edit.name, round_no, latency, first_new, 0, 0, 0.0, errors,
                          workers_restarted=bool(set(session_pids(proc.pid)) - old))
    return sample, (t0, t1, t0_wall, log_offset)


def settle(port: int, seconds: float, path: str = "/hello") -> None:
    """Let a server finish what an edit started (a second watcher, a lazy worker) before the next edit."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        http_get(port, path, timeout=1.0)
        time.sleep(0.05)


def run_server(runner: Runner, app: RefApp, edits: list[str], round_no: int, serial: list[int],
               logdir: Path, timeout: float, pause: float) -> tuple[ColdStart, list[ReloadSample]]:
    """Start one server, time its cold start, apply each edit in turn, stop it."""
    port = free_port()
    proc, cold = runner.start_ready(app, port, logdir)
    samples, windows = [], []
    bg = None
    try:
        settle(port, pause)
        bg = BackgroundClient(port, logdir, runner.name)
        settle(port, 0.3)
        for name in edits:
            serial[0] += 1
            sample, window = measure_edit(runner, app, port, proc, EDITS[name], serial[0], round_no,
                                          timeout if not runner.stale else min(timeout, 8.0))
            settle(port, pause)  # the old workers retire meanwhile: parse the log after it
            sample.phases = parse_phases(proc.log_text()[window[3]:], window[2])
            samples.append(sample)
            windows.append(window)
    finally:
        if bg is not None:
            bg.stop()
        proc.stop()
    for sample, (t0, t1, _, _) in zip(samples, windows):
        sample.failed, sample.requests, sample.stall = bg.window(t0, t1)
    return ColdStart(runner.name, round_no, cold), samples


def run(runners: list[Runner], apps: dict[str, RefApp], edits: dict[str, list[str]], rounds: int,
        logdir: Path, timeout: float = 20.0, pause: float = 1.0,
        progress: Callable[[str], None] = print) -> dict:
    """Alternate the runners for `rounds` rounds; return cold starts and reload samples as dicts."""
    colds, samples = [], []
    serial = [1000]
    for round_no in range(rounds):
        for runner in runners:
            try:
                cold, got = run_server(runner, apps[runner.name], edits[runner.name], round_no, serial,
                                       logdir, timeout, pause)
            except RuntimeError as exc:
                progress(f"  {runner.name}: failed: {str(exc)[:300]}")
                continue
            colds.append(cold)
            samples.extend(got)
            lat = ", ".join(f"{s.edit}={_ms(s.latency)}" + (f" ({s.phases['strategy']})" if s.phases.get("strategy") else "")
                            for s in got)
            progress(f"  round {round_no} {runner.name}: cold {cold.seconds * 1000:.0f} ms; {lat}; "
                     f"failed {sum(s.failed for s in got)}")
    return {"cold_start": [asdict(c) for c in colds], "reload": [asdict(s) for s in samples]}


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"
