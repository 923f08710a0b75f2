"""Idle CPU of the watchers: CPU seconds a server's whole process group uses while nothing changes,
in a tree that also holds thousands of unrelated files."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bench.procs import cpu_seconds, free_port, session_pids
from bench.refapp import RefApp
from bench.runners import Runner


@dataclass
class IdleCpu:
    runner: str
    round: int
    seconds: float       # length of the window
    cpu: float           # CPU seconds used by the session in the window
    processes: int

    @property
    def percent(self) -> float:
        return 100 * self.cpu / self.seconds


def measure(runner: Runner, app: RefApp, seconds: float, round_no: int, logdir: Path,
            settle: float = 3.0) -> IdleCpu:
    """Start the server, let it settle, then count its CPU over `seconds` with no request and no edit."""
    port = free_port()
    proc, _ = runner.start_ready(app, port, logdir)
    try:
        time.sleep(settle)  # gunicorn's workers and the peers' watchers finish their start-up scans
        pids = session_pids(proc.pid)
        before = cpu_seconds(pids)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        now = session_pids(proc.pid)
        after = cpu_seconds(now)
        used = sum(after[p] - before.get(p, 0.0) for p in after)
        return IdleCpu(runner.name, round_no, elapsed, used, len(now))
    finally:
        proc.stop()


def run(runners: list[Runner], apps: Callable[[str], RefApp], seconds: float, rounds: int, logdir: Path,
        progress: Callable[[str], None] = print) -> list[dict]:
    """Alternate the runners for `rounds` rounds; return samples as dicts (with percent of one core)."""
    out = []
    for round_no in range(rounds):
        for runner in runners:
            try:
                sample = measure(runner, apps(runner.name), seconds, round_no, logdir)
            except RuntimeError as exc:
                progress(f"  {runner.name}: failed: {str(exc)[:300]}")
                continue
            out.append(dict(asdict(sample), percent=sample.percent))
            progress(f"  round {round_no} {runner.name}: {sample.cpu:.3f} CPU s in {sample.seconds:.0f} s "
                     f"({sample.percent:.2f}% of a core, {sample.processes} processes)")
    return out
