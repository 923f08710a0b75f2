"""Memory: total PSS (/proc/PID/smaps_rollup) of the master and its workers serving the heavy app.

Ours (which reloads) vs gunicorn without --preload (what --reload requires: every worker imports the
vendor layer itself) vs gunicorn --preload (shares it, but cannot reload). Ours is measured again after
a few reloads, to show the sharing survives them.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bench.procs import Spawned, free_port, http_get, pss_kib, session_pids
from bench.refapp import RefApp
from bench.reload import EDITS, probe
from bench.runners import Gunicorn, Runner, ours


@dataclass
class Memory:
    runner: str
    label: str
    when: str           # "started" or "after N reloads"
    round: int
    processes: int
    pss_mb: float


def stable_pss(proc: Spawned, processes: int, timeout: float = 60.0) -> tuple[int, float]:
    """Wait until the session holds `processes` processes and their PSS total stops growing.

    Returns (process count, PSS MB). Workers that import the app lazily are still growing at first.
    """
    deadline, last, total, pids = time.monotonic() + timeout, -1.0, 0.0, []
    while time.monotonic() < deadline:
        pids = session_pids(proc.pid)
        total = sum(pss_kib(pid) for pid in pids) / 1024
        if len(pids) >= processes and abs(total - last) < 0.01 * total:
            break
        last = total
        time.sleep(1.0)
    return len(pids), total


def contenders(workers: int) -> list[Runner]:
    """Ours vs gunicorn without and with --preload, all with `workers` workers and --reload on."""
    ours_runner = ours(workers)
    ours_runner.label = f"ours: ProjectrServer -w {workers} (reloading)"
    return [ours_runner,
            Gunicorn("gunicorn", f"gunicorn --reload -w {workers}", workers=workers),
            Gunicorn("gunicorn-preload", f"gunicorn --reload --preload -w {workers}", workers=workers,
                     preload=True)]


def run(apps: Callable[[str], RefApp], workers: int, rounds: int, reloads: int, logdir: Path,
        progress: Callable[[str], None] = print) -> list[dict]:
    """Alternate the contenders for `rounds` rounds; return PSS samples as dicts."""
    out: list[Memory] = []
    for round_no in range(rounds):
        for runner in contenders(workers):
            app = apps(runner.name)
            port = free_port()
            try:
                proc, _ = runner.start_ready(app, port, logdir)
            except RuntimeError as exc:
                progress(f"  {runner.name}: failed: {str(exc)[:300]}")
                continue
            try:
                count, mb = stable_pss(proc, workers + 1)
                out.append(Memory(runner.name, runner.label, "started", round_no, count, mb))
                progress(f"  round {round_no} {runner.name}: {count} processes, PSS {mb:.1f} MB")
                if runner.name.startswith("ours") and reloads:
                    _reload(app, port, workers, reloads)
                    count, mb = stable_pss(proc, workers + 1)
                    out.append(Memory(runner.name, runner.label, f"after {reloads} reloads", round_no, count, mb))
                    progress(f"  round {round_no} {runner.name} after {reloads} reloads: PSS {mb:.1f} MB")
            finally:
                proc.stop()
    return [asdict(m) for m in out]


def _reload(app: RefApp, port: int, workers: int, count: int) -> None:
    """Apply `count` leaf edits, each waited for like the reload benchmark does."""
    for n in range(count):
        serial = 500 + n
        edit = EDITS["leaf"]
        t0 = time.monotonic()
        edit.apply(Path(app.tree), serial)
        probe(port, 2 * workers, lambda v: edit.is_new(v, serial, set()), t0, 20.0)
        http_get(port, "/hello")
