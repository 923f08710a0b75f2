"""Throughput: requests/s with the same number of workers, ours vs gunicorn sync vs one waitress process.

wrk (Debian package) when installed, else bench/loadgen.py; 16 connections; /hello and /cpu; keep-alive
and a fresh connection per request (`Connection: close`).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bench.procs import HOST, free_port, session_cpu_seconds
from bench.refapp import RefApp
from bench.runners import Gunicorn, Runner, Waitress, ours

CONNECTIONS = 16
WRK = shutil.which("wrk")


@dataclass
class Throughput:
    runner: str
    workers: int
    path: str
    mode: str          # "keep-alive" or "close"
    round: int
    rps: float
    errors: int
    tool: str
    cpu_ms: float = 0.0  # server CPU (all its processes) per completed request: robust to a busy machine


def _wrk(url: str, duration: float, close: bool, cpus: str = "") -> tuple[float, int, int]:
    """Run wrk (on ``cpus`` when set); return (requests/s, errors, requests)."""
    cmd = [WRK, "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", url]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    if cpus:
        cmd[:0] = ["taskset", "-c", cpus]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30,
                         start_new_session=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, errors + (int(non2xx.group(1)) if non2xx else 0), total


def _loadgen(url: str, duration: float, close: bool, cpus: str = "") -> tuple[float, int, int]:
    """Run bench/loadgen.py in its own process (on ``cpus`` when set); return (requests/s, errors, requests)."""
    cmd = [sys.executable, "-m", "bench.loadgen", url, "--connections", str(CONNECTIONS),
           "--duration", str(duration)] + (["--close"] if close else [])
    if cpus:
        cmd[:0] = ["taskset", "-c", cpus]
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, cwd=root,
                         start_new_session=True).stdout
    res = json.loads(out)
    return res["rps"], res["errors"], res["requests"]


def load(url: str, duration: float, close: bool, cpus: str = "") -> tuple[float, int, int]:
    """Measure url with wrk, or the asyncio load generator when wrk is missing (on ``cpus`` when set)."""
    return (_wrk if WRK else _loadgen)(url, duration, close, cpus)


def servers(workers: int) -> list[tuple[str, Runner]]:
    """The contenders at one worker count, each with the key the results use."""
    return [("ours", ours(workers)),
            ("gunicorn-sync", Gunicorn("gunicorn-sync", f"gunicorn sync -w {workers}", workers=workers, reload=False)),
            ("waitress", Waitress("waitress", f"waitress (1 process, {workers} threads)", threads=workers))]


def run(apps: Callable[[str], RefApp], worker_counts: list[int], rounds: int, duration: float,
        logdir: Path, progress: Callable[[str], None] = print) -> list[dict]:
    """Alternate the contenders for each worker count and round; return the samples as dicts."""
    samples = []
    for workers in worker_counts:
        for round_no in range(rounds):
            for key, runner in servers(workers):
                samples += _measure_server(key, runner, apps(runner.name), workers, round_no, duration, logdir,
                                           progress)
    return [asdict(s) for s in samples]


def _measure_server(key: str, runner: Runner, app: RefApp, workers: int, round_no: int, duration: float,
                    logdir: Path, progress: Callable[[str], None]) -> list[Throughput]:
    """Start one server and run every (path, mode) against it, after a short warm-up."""
    port = free_port()
    try:
        proc, _ = runner.start_ready(app, port, logdir)
    except RuntimeError as exc:
        progress(f"  {runner.name}: failed: {str(exc)[:300]}")
        return []
    out = []
    try:
        time.sleep(1.0 if workers <= 2 else 2.0)  # let every worker finish booting (gunicorn imports per worker)
        load(f"http://{HOST}:{port}/hello", 1.0, False)  # warm-up
        for path in ("/hello", "/cpu"):
            for close in (False, True):
                before = session_cpu_seconds(proc.pid)
                rps, errors, total = load(f"http://{HOST}:{port}{path}", duration, close)
                cpu_ms = (session_cpu_seconds(proc.pid) - before) * 1000 / max(1, total)
                mode = "close" if close else "keep-alive"
                out.append(Throughput(key, workers, path, mode, round_no,
                                      rps, errors, "wrk" if WRK else "loadgen", cpu_ms))
                progress(f"  w={workers} round {round_no} {runner.name} {path} {mode}: {rps:.0f} req/s, "
                         f"{cpu_ms:.2f} CPU ms/request{f', {errors} errors' if errors else ''}")
    finally:
        proc.stop()
    return out
