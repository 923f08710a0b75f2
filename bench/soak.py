#!/usr/bin/env python
"""Soak: the long versions of the reliability scenarios, with the same counts as the pytest runs.

    python bench/soak.py --minutes N [--only NAME ...] [--markdown]

Runs every scenario of tests/reliability once in its long version (100 reloads under load, chaos
for 30 s or more, 10,000-request hostile bursts, ...), then repeats the set until N minutes have
passed. Prints one table row per scenario with the totals: duration, requests, failures,
recoveries, the slowest recovery, the scenario's own counts, and its verdict. Exit status 1 when
any scenario found a problem.

Every process runs in its own session and is killed by process group when its scenario ends.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability import scenarios  # noqa: E402
from tests.reliability.harness import TABLE_HEADER, Launcher, Result  # noqa: E402


def long_versions(minutes: float) -> dict[str, Callable[[Launcher], Result]]:
    """Scenario name -> the long run (chaos grows with the time budget)."""
    from tests.reliability.test_state_machine import state_machine

    chaos_seconds = max(30.0, minutes * 60 * 0.15)
    return {
        "reloads": lambda l: scenarios.reloads_under_load(l, reloads=100, workers=4, clients=8),
        "bad-edits": lambda l: scenarios.bad_edits_under_load(l, rounds=3, workers=4, clients=8),
        "chaos": lambda l: scenarios.chaos(l, seconds=chaos_seconds, interval=0.1, workers=4, clients=8),
        "crash-loop": lambda l: scenarios.crash_loop(l, crash_seconds=10.0),
        "master-sigkill": lambda l: scenarios.master_sigkill(l),
        "quit": lambda l: scenarios.graceful_shutdown(l, how="QUIT", slow=2.0),
        "term": lambda l: scenarios.graceful_shutdown(l, how="TERM", slow=30.0),
        "hostile": lambda l: scenarios.hostile_input(l, burst=10_000),
        "two-masters": lambda l: scenarios.two_masters(l, rounds=20),
        "pid-race": lambda l: scenarios.pid_file_race(l, rounds=1000),
        "resource-faults": lambda l: scenarios.resource_faults(l),
        "state-machine": lambda l: state_machine(l, examples=30, steps=15, derandomize=False),
        "nginx": lambda l: scenarios.nginx_front(l, reloads=60),
        "nginx-max-fails-0": lambda l: scenarios.nginx_front(l, reloads=60, server_options="max_fails=0"),
    }


def merge(total: Result | None, run: Result) -> Result:
    """Add one run's counts to the scenario's totals."""
    if total is None:
        run.extra = {"runs": 1, **run.extra}
        return run
    total.duration += run.duration
    total.requests += run.requests
    total.failures += run.failures
    total.recoveries += run.recoveries
    if run.max_recovery is not None:
        total.max_recovery = max(total.max_recovery or 0.0, run.max_recovery)
    total.problems += run.problems
    runs = total.extra.get("runs", 1) + 1
    for key, value in run.extra.items():
        if isinstance(value, (int, float)) and isinstance(total.extra.get(key), (int, float)):
            total.extra[key] += value
        else:
            total.extra[key] = value  # descriptive values: the latest run's
    total.extra["runs"] = runs
    return total


def run_one(name: str, scenario: Callable[[Launcher], Result]) -> Result:
    """Run one scenario in a fresh directory; its processes die with it."""
    where = Path(tempfile.mkdtemp(prefix=f"soak-{name}-"))
    launcher = Launcher(where)
    result = Result(name, "-")
    try:
        result = scenario(launcher)
    except Exception as exc:  # noqa: BLE001 - a crashed scenario is a row with its error, not a stop
        result.problems.append(f"{type(exc).__name__}: {str(exc)[:500]}")
    finally:
        launcher.close()
        if result.problems:  # keep the evidence: the logs of a failed run
            kept = Path(tempfile.mkdtemp(prefix=f"soak-failed-{name}-"))
            for log in where.rglob("*.log"):
                shutil.copy(log, kept / f"{log.parent.name}-{log.name}")
            result.extra["logs"] = str(kept)
        shutil.rmtree(where, ignore_errors=True)
    return result


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget; at least one full pass")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this scenario (repeatable); names: " + ", ".join(long_versions(1)))
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # TERM cleans up like Ctrl-C: every scenario's processes die
    chosen = {name: run for name, run in long_versions(args.minutes).items() if not args.only or name in args.only}
    deadline = time.monotonic() + args.minutes * 60
    totals: dict[str, Result] = {}
    passes = 0
    while passes == 0 or time.monotonic() < deadline:
        for name, scenario in chosen.items():
            if passes and time.monotonic() >= deadline:
                break
            result = run_one(name, scenario)
            totals[name] = merge(totals.get(name), result)
            if not args.markdown:
                print(f"[{time.strftime('%H:%M:%S')}] {result.row()}", flush=True)
        passes += 1
    print()
    print(TABLE_HEADER)
    for result in totals.values():
        print(result.row())
    return 1 if any(result.problems for result in totals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
