"""ASGI: a generated FastAPI app served by us, by uvicorn and by gunicorn with uvicorn's worker.

    python -m bench.asgi [--rounds 3] [--edits 5] [--duration 2] [--throughput-rounds 6]
                         [--pinned-rounds 6] [--skip reload,throughput,memory]

- Reload: `prefork main:app --reload -w 2` vs `uvicorn main:app --reload` vs
  `gunicorn -k uvicorn.workers.UvicornWorker --reload -w 2`; save-to-served of an edit to a router
  module (every worker answers with the new code on fresh connections: bench.reload's probe) and the
  failed background requests in each window (bench/bgclient.py). Servers alternate, round after round.
- Throughput: wrk (bench.throughput.load) on a JSON endpoint and a 2 ms CPU endpoint, 2 and 4 workers:
  `prefork main:app -w N` vs `uvicorn --workers N` vs gunicorn + UvicornWorker, keep-alive; the
  servers run side by side and take short turns (paired rounds), with CPU per request from /proc
  and the spread of wrk's connections over each server's processes. Then the same with one worker
  each, the servers on CPU 0 and wrk on CPU 1: the cost of a request in each, without the two sides
  taking turns on the same cores.
- Memory: PSS of every process of each server with 4 workers, once serving and settled.

The app: main.py + routers in api/, pydantic models, a dependency-injected service, and the
reference app's generated vendor layer (about 1 s of import, 24 MB) imported by main.py. It is
generated into a temporary folder; results go to bench/out/asgi.json and a summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import HOST, Spawned, connections_per_process, free_port, http_get, session_cpu_seconds, session_pids
from bench.refapp.layer import cpu_iterations, set_mark
from bench.refapp.vendor import generate_vendor
from bench.reload import BackgroundClient, Edit, measure_edit, settle
from bench.runners import BIN, Runner
from bench.throughput import CONNECTIONS, load

LEAF = "api/leaf.py"  # the edited module: a router's helper
OUT = Path(__file__).resolve().parent / "out"

APP_FILES = {
    "main.py": '''
        import heavyvendor  # noqa: F401  the reference app's heavy third-party layer (about 1 s)
        from fastapi import FastAPI

        from api import routes

        app = FastAPI()
        app.include_router(routes.router)
        ''',
    "api/__init__.py": "",
    "api/leaf.py": '''
        MARK = "l0"
        # pad: #
        ''',
    "api/models.py": '''
        from pydantic import BaseModel


        class Item(BaseModel):
            id: int
            name: str
            tags: list[str]
            price: float
        ''',
    "api/services.py": '''
        from api.models import Item


        class Catalog:
            def items(self) -> list[Item]:
                return [Item(id=i, name=f"item {i}", tags=["a", "b"], price=i * 1.5) for i in range(10)]


        def get_catalog() -> Catalog:
            return Catalog()
        ''',
    "api/routes.py": '''
        import os

        from fastapi import APIRouter, Depends
        from fastapi.responses import PlainTextResponse

        from api import leaf
        from api.models import Item
        from api.services import Catalog, get_catalog

        ROOT = "r0"
        CPU_ITERATIONS = {cpu}
        router = APIRouter()


        @router.get("/", response_class=PlainTextResponse)
        async def version():
            return f"version={{ROOT}}:{{leaf.MARK}} pid={{os.getpid()}}"


        @router.get("/hello", response_class=PlainTextResponse)
        async def hello():
            return "hello"


        @router.get("/json", response_model=list[Item])
        async def items(catalog: Catalog = Depends(get_catalog)):
            return catalog.items()


        @router.get("/cpu", response_class=PlainTextResponse)
        async def cpu():
            total = 0
            for i in range(CPU_ITERATIONS):  # about 2 ms of CPU on the loop, as every server runs it
                total += i * i % 7
            return str(total)
        ''',
}


@dataclass
class AsgiApp:
    """The generated app (duck-typed as bench.refapp.RefApp for bench.runners and bench.reload)."""

    tree: str
    vendor_path: str
    vendor_seconds: float
    spec: str = "main:app"
    ready_path: str = "/hello"

    @property
    def pythonpath(self) -> str:
        return f"{self.tree}:{self.vendor_path}"


def generate(out: Path, vendor: tuple[Path, float] | None = None) -> AsgiApp:
    """Write the app into ``out/tree`` (the vendor layer into ``out/vendor`` unless one is given)."""
    vendor_root, seconds = vendor or generate_vendor(out, cost=1.0, mb=24.0)
    tree = out / "tree"
    cpu = cpu_iterations()
    for rel, text in APP_FILES.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text.format(cpu=cpu) if "{cpu}" in text else text).lstrip("\n"))
    return AsgiApp(str(tree), str(vendor_root), seconds)


# -- the servers ----------------------------------------------------------------------------------

@dataclass
class Ours(Runner):
    reload: bool = True

    def command(self, app, port: int) -> list[str]:  # type: ignore[override]
        return ([str(BIN / "prefork"), app.spec] + (["--reload"] if self.reload else [])
                + ["-w", str(self.workers), "--bind", f"{HOST}:{port}"])


@dataclass
class UvicornAsgi(Runner):
    reload: bool = True

    def command(self, app, port: int) -> list[str]:  # type: ignore[override]
        cmd = [str(BIN / "uvicorn"), app.spec, "--host", HOST, "--port", str(port), "--log-level", "warning",
               "--no-access-log"]
        return cmd + (["--reload"] if self.reload else ["--workers", str(self.workers)])


@dataclass
class GunicornUvicorn(Runner):
    reload: bool = True

    def command(self, app, port: int) -> list[str]:  # type: ignore[override]
        cmd = [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", str(self.workers),
               "-b", f"{HOST}:{port}", "--log-level", "warning"]
        return cmd + (["--reload"] if self.reload else []) + [app.spec]


def reload_runners() -> list[Runner]:
    return [Ours("ours", "prefork main:app --reload -w 2", workers=2),
            UvicornAsgi("uvicorn", "uvicorn main:app --reload"),
            GunicornUvicorn("gunicorn", "gunicorn -k uvicorn.workers.UvicornWorker --reload -w 2", workers=2)]


def serving_runners(workers: int, cpus: str = "") -> list[Runner]:
    return [Ours("ours", f"prefork main:app -w {workers}", workers=workers, reload=False, cpus=cpus),
            UvicornAsgi("uvicorn", f"uvicorn --workers {workers}", workers=workers, reload=False, cpus=cpus),
            GunicornUvicorn("gunicorn", f"gunicorn -k UvicornWorker -w {workers}", workers=workers, reload=False,
                            cpus=cpus)]


# -- reload -----------------------------------------------------------------------------------------

LEAF_EDIT = Edit("leaf", lambda tree, n: set_mark(tree / LEAF, f"l{n}", n), lambda v, n, old: v[1] == f"l{n}")


def bench_reload(app: AsgiApp, rounds: int, edits: int, logdir: Path) -> list[dict]:
    """Every runner, round after round: start, ``edits`` leaf edits timed, stop."""
    samples: list[dict] = []
    serial = 1000
    for round_no in range(rounds):
        for runner in reload_runners():
            port = free_port()
            offset = len((logdir / f"{runner.name}.log").read_text()) if (logdir / f"{runner.name}.log").exists() else 0
            proc, cold = runner.start_ready(app, port, logdir)  # type: ignore[arg-type]
            bg = None
            got = []
            try:
                _wait_warm(runner, proc, offset)
                settle(port, 1.0)
                bg = BackgroundClient(port, logdir, runner.name)
                settle(port, 0.3)
                for _ in range(edits):
                    serial += 1
                    # gunicorn's reloader never restarts a UvicornWorker (benoitc/gunicorn#2339): 10 s is "never"
                    timeout = 10.0 if isinstance(runner, GunicornUvicorn) else 30.0
                    sample, window = measure_edit(runner, app, port, proc, LEAF_EDIT, serial,  # type: ignore[arg-type]
                                                  round_no, timeout)
                    settle(port, 1.0)  # the old workers retire before the next edit
                    got.append((sample, window))
            finally:
                if bg is not None:
                    bg.stop()
                proc.stop()
            for sample, (t0, t1, _, _) in got:
                sample.failed, sample.requests, sample.stall = bg.window(t0, t1)
                samples.append({**asdict(sample), "cold": cold})
            print(f"  round {round_no} {runner.name}: cold {cold * 1000:.0f} ms; "
                  + ", ".join(_ms(s.latency) for s, _ in got) + f"; failed {sum(s.failed for s, _ in got)}",
                  flush=True)
    return samples


def _wait_warm(runner: Runner, proc: Spawned, offset: int, timeout: float = 30.0) -> None:
    """Ours: wait until the base has preloaded the third-party modules (a second or two after the
    start; an edit before that waits for the base, as a first save would). ``offset``: where this
    start's lines begin in the log, which every round appends to."""
    if not isinstance(runner, Ours):
        return
    deadline = time.monotonic() + timeout
    while "third-party modules preloaded" not in proc.log_text()[offset:] and time.monotonic() < deadline:
        time.sleep(0.05)


# -- throughput -----------------------------------------------------------------------------------

def bench_throughput(app: AsgiApp, worker_counts: list[int], rounds: int, duration: float,
                     logdir: Path, pinned: bool = False) -> list[dict]:
    """wrk on /json and /cpu, keep-alive, in paired short rounds.

    Every server of a worker count is started once and kept running (idle while the others are
    measured); then, round after round and path after path, each gets ``duration`` seconds of wrk,
    one right after the other, in an order that reverses every round. On a shared machine whose
    load swings from one minute to the next, two servers measured seconds apart see about the same
    machine: the ratio within a round (a pair) is what to read, and its median over the rounds. The
    server's CPU (all its processes, from /proc) per completed request is recorded too: it does not
    depend on how much CPU the other tenants left us; so is how wrk's connections were spread over
    the server's processes halfway through (every run of wrk opens new ones).

    ``pinned``: every server runs on CPU 0 and wrk on CPU 1, so that the two do not take turns on
    the same cores: what is left to compare is the cost of a request in each server.
    """
    rows = []
    server_cpus, client_cpus = ("0", "1") if pinned else ("", "")
    for workers in worker_counts:
        running: list[tuple[Runner, int, Spawned]] = []
        try:
            for runner in serving_runners(workers, server_cpus):
                port = free_port()
                proc, _ = runner.start_ready(app, port, logdir)  # type: ignore[arg-type]
                running.append((runner, port, proc))
                _warm(port, workers)
                for path in ("/json", "/cpu"):
                    load(f"http://{HOST}:{port}{path}", 1.0, close=False)  # first requests, caches, pydantic
            for round_no in range(rounds):
                order = running if round_no % 2 == 0 else running[::-1]
                for path in ("/json", "/cpu"):
                    for runner, port, proc in order:
                        row = _measure(proc, port, path, duration, client_cpus)
                        rows.append(dict(runner=runner.name, workers=workers, path=path, round=round_no,
                                         pinned=pinned, **row))
                        print(f"  round {round_no} {runner.name} -w {workers}{' pinned' if pinned else ''} {path}: "
                              f"{row['rps']:.0f} req/s, {row['cpu_ms']:.2f} CPU ms/request, "
                              f"connections {row['spread']}, {row['errors']} errors", flush=True)
        finally:
            for _, _, proc in running:
                proc.stop()
    return rows


def _measure(proc: Spawned, port: int, path: str, duration: float, cpus: str) -> dict:
    """One run of wrk: requests/s, errors, requests, the server's CPU ms per request, and the number
    of wrk's connections each of the server's processes held halfway through."""
    spread: list[int] = []
    sampler = threading.Timer(duration / 2, lambda: spread.extend(
        connections_per_process(session_pids(proc.pid), port)))
    before = session_cpu_seconds(proc.pid)
    sampler.start()
    try:
        rps, errors, total = load(f"http://{HOST}:{port}{path}", duration, close=False, cpus=cpus)
    finally:
        sampler.join()
    cpu_ms = (session_cpu_seconds(proc.pid) - before) * 1000 / max(1, total)
    return dict(rps=rps, errors=errors, requests=total, cpu_ms=cpu_ms, spread=spread)


def _warm(port: int, workers: int) -> None:
    """Every worker has answered (uvicorn and gunicorn import the app in each worker after the first answers)."""
    deadline = time.monotonic() + 30
    pids: set[int] = set()
    while len(pids) < workers and time.monotonic() < deadline:
        response = http_get(port, "/")
        if response.status == 200:
            pids.add(int(response.body.rsplit("=", 1)[1]))
    time.sleep(1.0)  # let the workers that came up last finish their own imports


# -- memory ---------------------------------------------------------------------------------------

def bench_memory(app: AsgiApp, workers: int, logdir: Path) -> list[dict]:
    """PSS of each server's processes with ``workers`` workers (and ours with --reload), once settled."""
    from bench.memory import snapshot

    runners = serving_runners(workers) + [Ours("ours-reload", f"prefork main:app --reload -w {workers}",
                                               workers=workers, reload=True)]
    rows = []
    for runner in runners:
        port = free_port()
        proc, _ = runner.start_ready(app, port, logdir)  # type: ignore[arg-type]
        try:
            _warm(port, workers)
            pids, pss, uss, roles = _settled(proc, snapshot)
            rows.append(dict(runner=runner.name, label=runner.label, processes=len(pids), pss_mb=pss, uss_mb=uss,
                             roles=roles))
            print(f"  {runner.label}: {len(pids)} processes, PSS {pss:.1f} MB, private {uss:.1f} MB", flush=True)
        finally:
            proc.stop()
    return rows


def _settled(proc: Spawned, snapshot) -> tuple[list[int], float, float, dict]:
    """A snapshot once the process count and the PSS total stopped moving (two in a row, 1 s apart)."""
    last = None
    deadline = time.monotonic() + 60
    while True:
        pids, pss, uss, roles, _ = snapshot(proc)
        if last is not None and len(pids) == len(last[0]) and abs(pss - last[1]) < 0.01 * pss:
            return pids, pss, uss, roles
        if time.monotonic() > deadline:
            return pids, pss, uss, roles
        last = (pids, pss)
        time.sleep(1.0)


# -- summary --------------------------------------------------------------------------------------

def summary(results: dict) -> str:
    """Markdown tables of the medians."""
    lines = []
    if results.get("reload"):
        lines += ["| server | median save-to-served | p90 | dark time (median of the longest background "
                  "request per edit) | failed / requests | cold start |", "|---|---|---|---|---|---|"]
        for rows in _group(results["reload"], "runner").values():
            lat = sorted(r["latency"] for r in rows if r["latency"] is not None)
            never = sum(1 for r in rows if r["latency"] is None)
            lines.append(f"| {rows[0]['runner']} | {_ms(statistics.median(lat)) if lat else 'never'}"
                         f" | {_ms(lat[int(0.9 * (len(lat) - 1))]) if lat else '-'}"
                         f"{f' ({never} never)' if never else ''} | {_ms(statistics.median(r['stall'] for r in rows))}"
                         f" | {sum(r['failed'] for r in rows)} / "
                         f"{sum(r['requests'] for r in rows)} | {_ms(statistics.median(r['cold'] for r in rows))} |")
        ours = [r["latency"] for r in results["reload"] if r["runner"] == "ours" and r["latency"]]
        for peer in ("uvicorn", "gunicorn"):
            theirs = [r["latency"] for r in results["reload"] if r["runner"] == peer and r["latency"]]
            if ours and theirs:
                lines.append(f"\nours / {peer}: 1/{statistics.median(theirs) / statistics.median(ours):.1f}")
    if results.get("throughput"):
        lines += ["", throughput_table(results["throughput"])]
    if results.get("memory"):
        lines += ["", "| server | processes | PSS total | private |", "|---|---|---|---|"]
        for r in results["memory"]:
            lines.append(f"| {r['label']} | {r['processes']} | {r['pss_mb']:.1f} MB | {r['uss_mb']:.1f} MB |")
    return "\n".join(lines)


def throughput_table(rows: list[dict]) -> str:
    """Medians per server, the median (and range) of the paired ratios, CPU per request, and how
    wrk's connections were spread: the most one process of ours and of gunicorn held (median over
    the rounds), and in how many rounds one gunicorn worker held them all."""
    lines = ["| workers | endpoint | ours req/s | uvicorn | gunicorn+UvicornWorker | ours/uvicorn (paired) "
             "| ours/gunicorn (paired: median, min-max) | CPU ms/request: ours, uvicorn, gunicorn "
             "| gunicorn CPU / ours | busiest process's connections: ours, gunicorn | rounds one gunicorn "
             "worker held all |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cells: dict = {}
    for r in rows:
        key = (r["workers"], r.get("pinned", False), r["path"])
        cells.setdefault(key, {}).setdefault(r["round"], {})[r["runner"]] = r
    for (workers, pinned, path), by_round in sorted(cells.items()):
        rounds = list(by_round.values())
        vs_uvicorn, vs_gunicorn = _paired(rounds, "uvicorn"), _paired(rounds, "gunicorn")
        cpu = {name: _median_of(rounds, name, "cpu_ms") for name in ("ours", "uvicorn", "gunicorn")}
        busiest = {name: _busiest(rounds, name) for name in ("ours", "gunicorn")}
        alone = sum(1 for got in rounds if got.get("gunicorn", {}).get("spread") == [CONNECTIONS])
        lines.append(
            f"| {workers}{' (pinned)' if pinned else ''} | {path} | {_median_of(rounds, 'ours', 'rps'):.0f} | "
            f"{_median_of(rounds, 'uvicorn', 'rps'):.0f} | {_median_of(rounds, 'gunicorn', 'rps'):.0f} | "
            f"{_ratio(vs_uvicorn)} | {_ratio(vs_gunicorn)}"
            f"{f' ({vs_gunicorn[0]:.2f}-{vs_gunicorn[-1]:.2f})' if vs_gunicorn else ''} | "
            f"{cpu['ours']:.2f}, {cpu['uvicorn']:.2f}, {cpu['gunicorn']:.2f} | "
            f"{cpu['gunicorn'] / cpu['ours'] if cpu['ours'] else 0:.2f} | "
            f"{busiest['ours']}, {busiest['gunicorn']} of {CONNECTIONS} | {alone} of {len(rounds)} |")
    return "\n".join(lines)


def _busiest(rounds: list[dict], runner: str) -> str:
    """The median over the rounds of the most connections one of the runner's processes held."""
    most = [got[runner]["spread"][0] for got in rounds if got.get(runner, {}).get("spread")]
    return f"{statistics.median(most):g}" if most else "-"


def _median_of(rounds: list[dict], runner: str, key: str) -> float:
    values = [got[runner][key] for got in rounds if runner in got]
    return statistics.median(values) if values else 0.0


def _paired(rounds: list[dict], peer: str) -> list[float]:
    """ours / peer within each round, sorted."""
    return sorted(got["ours"]["rps"] / got[peer]["rps"] for got in rounds
                  if "ours" in got and peer in got and got[peer]["rps"] > 0)


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def _group(rows: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row[key], []).append(row)
    return out


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edits", type=int, default=5, help="edits per server per round")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of wrk per measurement")
    parser.add_argument("--throughput-rounds", type=int, default=6, help="paired rounds per worker count")
    parser.add_argument("--workers", default="2,4", help="comma-separated worker counts for the throughput")
    parser.add_argument("--pinned-rounds", type=int, default=6,
                        help="paired rounds of one worker per server on CPU 0, wrk on CPU 1 (0: none)")
    parser.add_argument("--skip", default="", help="comma-separated: reload, throughput, memory")
    parser.add_argument("--out", default=str(OUT / "asgi.json"))
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="bench-asgi-") as tmp:
        app = generate(Path(tmp))
        logdir = Path(tmp) / "logs"
        print(f"app in {app.tree}, vendor import {app.vendor_seconds:.2f} s", flush=True)
        results: dict = {"vendor_seconds": app.vendor_seconds, "python": sys.version.split()[0]}
        if "reload" not in skip:
            print("reload:", flush=True)
            results["reload"] = bench_reload(app, args.rounds, args.edits, logdir)
        if "throughput" not in skip:
            print("throughput:", flush=True)
            counts = [int(n) for n in args.workers.split(",")]
            results["throughput"] = bench_throughput(app, counts, args.throughput_rounds, args.duration, logdir)
            if args.pinned_rounds and len(os.sched_getaffinity(0)) >= 2:
                results["throughput"] += bench_throughput(app, [1], args.pinned_rounds, args.duration, logdir,
                                                          pinned=True)
        if "memory" not in skip:
            print("memory:", flush=True)
            results["memory"] = bench_memory(app, 4, logdir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(summary(results))


if __name__ == "__main__":
    main()
