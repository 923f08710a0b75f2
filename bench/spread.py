"""Load spread over the workers: ours on one shared port vs a port per worker vs gunicorn sync, same run.

    .venv/bin/python -m bench.spread [--duration 5] [--rounds 2] [--workers 2] [--paths /cpu /hello]

wrk on loopback only (-t2 -c16, keep-alive, a bounded duration) against a tiny WSGI app whose
``/cpu`` burns about 2 ms of CPU (calibrated here) and whose ``/hello`` does nothing. Contenders:

- ``ours shared``: ``prefork app -w N`` (one address, the default: every worker accepts on one
  socket, and only while it can serve, so an idle worker takes the next connection);
- ``ours shared --reload``: the same with ``--reload`` (workers forked by a generation process,
  which receives the listener over a unix socket);
- ``ours ports``: ``prefork app -w N --port-per-worker``; wrk's threads are split over the ports;
- ``gunicorn sync``: ``gunicorn -w N`` (sync workers: one connection at a time, closed after
  each response).

Each cell is the median requests/s of its rounds; "x gunicorn" is the median, over the rounds, of
requests/s over gunicorn sync's in the same round (the contenders of a round run one after the
other, so a round's ratio compares runs seconds apart: steadier than a ratio of medians on a machine
whose speed drifts). "CPU ms per request" (CPU time of all the server's processes over the
requests completed) is steadier than requests/s on a machine shared with other jobs. "Connections
per worker" counts, half-way through each run, the established connections each worker process
holds (from /proc): 8+8 is a perfect spread of wrk's 16 (gunicorn's sync workers close every
connection after one response, so they hold one at a time at most). ``--tree DIR`` adds the shared
port served by the prefork package in DIR (an older commit) for a before/after comparison.

Every server runs in its own session and is killed by process group. Needs wrk
(``apt-get install -y wrk``) and gunicorn (``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import HOST, cpu_seconds, free_port, session_pids, spawn, wait_http  # noqa: E402

BIN = Path(sys.executable).parent
CONNECTIONS = 16
THREADS = 2

APP = '''\
import os

CPU_ITERATIONS = {iterations}


def burn(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def app(environ, start_response):
    if environ["PATH_INFO"] == "/cpu":
        burn(CPU_ITERATIONS)
    body = b"%d\\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

# wrk: thread i sends to port i % len(ports) (its connections stay there: -c is split over threads).
SPLIT_PORTS = '''\
local ports = {{{ports}}}
local count = 0
function setup(thread)
  count = count + 1
  thread.addr = wrk.lookup("{host}", tostring(ports[(count - 1) % #ports + 1]))[1]
end
'''


def calibrate(target: float = 0.002) -> int:
    """Iterations of the app's loop that cost ``target`` seconds of CPU here (best of 5)."""
    namespace: dict = {}
    exec(APP.format(iterations=0), namespace)
    n, best = 200_000, float("inf")
    for _ in range(5):
        start = time.process_time()
        namespace["burn"](n)
        best = min(best, time.process_time() - start)
    return max(1, int(n * target / best))


@dataclass
class Contender:
    key: str
    label: str
    command: Callable[[int], list[str]]  # port -> command line
    ports: int = 1  # how many ports wrk spreads its threads over (a port per worker)
    pythonpath: str = ""  # put first on PYTHONPATH (another tree's prefork)


def contenders(workers: int, tree: str | None = None) -> list[Contender]:
    def prefork(*flags: str) -> Callable[[int], list[str]]:
        return lambda port: [str(BIN / "prefork"), "spread_app:app", "--bind", f"{HOST}:{port}", "-w", str(workers),
                             "--log-level", "warning", *flags]

    before = []
    if tree:  # the same command, with the prefork package of another tree (an older commit)
        before = [Contender("shared-tree", f"ours from {tree}, one shared port",
                            lambda port: [sys.executable, "-m", "prefork", *prefork("--shared-port")(port)[1:]],
                            pythonpath=tree)]
    return before + [
        Contender("shared", f"ours, one shared port (-w {workers}, the default)", prefork()),
        Contender("shared-reload", "ours, one shared port, --reload", prefork("--reload")),
        Contender("ports", f"ours, a port per worker (-w {workers} --port-per-worker)", prefork("--port-per-worker"),
                  ports=workers),
        Contender("gunicorn", f"gunicorn sync -w {workers}",
                  lambda port: [str(BIN / "gunicorn"), "-w", str(workers), "-b", f"{HOST}:{port}",
                                "--log-level", "warning", "spread_app:app"]),
    ]


def wrk(port: int, ports: int, path: str, duration: float, workdir: Path,
        during: Callable[[], object] = lambda: None) -> tuple[float, int, int]:
    """Run wrk for ``duration`` seconds, calling ``during()`` half-way; return (requests/s, errors, requests)."""
    cmd = [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s"]
    if ports > 1:
        script = workdir / "split.lua"
        script.write_text(SPLIT_PORTS.format(ports=", ".join(str(port + i) for i in range(ports)), host=HOST))
        cmd += ["-s", str(script)]
    with subprocess.Popen(cmd + [f"http://{HOST}:{port}{path}"], stdout=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        time.sleep(duration / 2)  # the bench's own clock: look at the connections half-way through the run
        during()
        out, _ = proc.communicate(timeout=duration + 30)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk said:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return float(found.group(1)), errors + (int(non2xx.group(1)) if non2xx else 0), total


def connections_per_process(sid: int, port: int) -> dict[int, int]:
    """Established connections to ``port`` held by each process of session ``sid`` (from /proc)."""
    inodes: dict[str, None] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes[fields[9]] = None
    counts = {}
    for pid in session_pids(sid):
        held = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except OSError:
            continue
        if held:
            counts[pid] = held
    return counts


@dataclass
class Sample:
    rps: float
    errors: int
    held: list[int]  # established connections per worker process, half-way through the run
    cpu_ms: float    # CPU time of all the server's processes per request completed


def session_cpu(sid: int) -> float:
    """CPU seconds used so far by the live processes of a server's session."""
    return sum(cpu_seconds(session_pids(sid)).values())


def measure(contender: Contender, paths: list[str], duration: float, workdir: Path,
            env: dict[str, str]) -> dict[str, Sample]:
    """Start one server, warm it up, run wrk on each path."""
    port = free_port(span=4)
    if contender.pythonpath:
        env = {**env, "PYTHONPATH": os.pathsep.join([contender.pythonpath, env["PYTHONPATH"]])}
    proc = spawn(contender.command(port), str(workdir), env, workdir / f"{contender.key}.log")
    results = {}
    try:
        for offset in range(contender.ports):
            if wait_http(port + offset, "/hello", time.monotonic() + 30, proc) is None:
                raise RuntimeError(f"{contender.label} did not serve:\n{proc.log_text()[-2000:]}")
        wrk(port, contender.ports, "/hello", 1.0, workdir)  # warm-up
        for path in paths:
            held: dict[int, int] = {}

            def count(held: dict[int, int] = held) -> None:
                for offset in range(contender.ports):
                    for pid, n in connections_per_process(proc.pid, port + offset).items():
                        held[pid] = held.get(pid, 0) + n

            before = session_cpu(proc.pid)
            rps, errors, total = wrk(port, contender.ports, path, duration, workdir, during=count)
            cpu_ms = (session_cpu(proc.pid) - before) * 1000 / max(1, total)
            results[path] = Sample(rps, errors, sorted(held.values(), reverse=True), cpu_ms)
    finally:
        proc.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every contender (default 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--paths", nargs="+", default=["/cpu", "/hello"])
    parser.add_argument("--only", action="append",
                        help="contender key(s): shared, shared-reload, ports, gunicorn, shared-tree")
    parser.add_argument("--tree", help="also run the shared port with the prefork package of this folder, e.g. "
                                       "an older commit: git archive COMMIT prefork | tar -x -C DIR")
    args = parser.parse_args(argv)
    if WRK is None:
        print("bench/spread.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    iterations = calibrate()
    samples: dict[tuple[str, str], list[Sample]] = {}
    labels: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="spread-") as tmp:
        workdir = Path(tmp)
        (workdir / "spread_app.py").write_text(APP.format(iterations=iterations))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(workdir))
        for round_no in range(args.rounds):
            for contender in contenders(args.workers, args.tree):
                if args.only and contender.key not in args.only:
                    continue
                labels[contender.key] = contender.label
                for path, sample in measure(contender, args.paths, args.duration, workdir, env).items():
                    samples.setdefault((contender.key, path), []).append(sample)
                    print(f"  round {round_no} {contender.key} {path}: {sample.rps:.0f} req/s, "
                          f"{sample.cpu_ms:.2f} CPU ms/request, connections per worker {_split(sample.held)}"
                          f"{f', {sample.errors} errors' if sample.errors else ''}", flush=True)
    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} keep-alive, {args.duration:g} s x {args.rounds} rounds, "
          f"{args.workers} workers, /cpu = {iterations} iterations (about 2 ms)\n")
    print("| server | path | req/s (median) | x gunicorn sync (median of rounds) | CPU ms per request | connections per worker, "
          "each round | errors |")
    print("|---|---|---:|---:|---:|---|---:|")
    for path in args.paths:
        reference = samples.get(("gunicorn", path))
        for key, label in labels.items():
            runs = samples.get((key, path))
            if not runs:
                continue
            rps = statistics.median(s.rps for s in runs)
            cpu = statistics.median(s.cpu_ms for s in runs)
            split = ", ".join(_split(s.held) for s in runs)
            ratio = (f"{statistics.median(s.rps / g.rps for s, g in zip(runs, reference)):.2f}x"
                     if reference else "-")
            print(f"| {label} | {path} | {rps:,.0f} | {ratio} | {cpu:.2f} | {split} | {sum(s.errors for s in runs)} |")
    return 0


def _split(held: list[int]) -> str:
    """``9+7``: established connections per worker process, half-way through a run."""
    return "+".join(str(n) for n in held) or "0"


WRK = shutil.which("wrk")

if __name__ == "__main__":
    sys.exit(main())
