"""python -m bench.all [--quick] [...]: run every benchmark, rewrite bench/RESULTS.md and bench/results.png.

Generates the reference application into a temporary folder (one copy of the project tree per server,
one shared vendor layer), runs the sections in turn (reload + cold start, real apps, scaling, throughput,
memory, idle CPU), each alternating the servers round after round, saves the raw data to
OUT/out/results.json (OUT: --out, bench/ by default) and writes the report. Every server runs in its own session on 127.0.0.1 and is
killed by process group.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import idle, memory, realapps, reload, report, runners, throughput
from bench.refapp import RefApp, generate_tree
from bench.refapp.layer import cpu_iterations
from bench.refapp.vendor import generate_vendor

HERE = Path(__file__).resolve().parent
PEERS = ["gunicorn", "uvicorn", "hupper", "werkzeug", "watchfiles", "waitress", "watchdog", "inotify",
         "django", "flask", "flask-sqlalchemy", "sqlalchemy", "setproctitle"]


def ours_available() -> bool:
    """True when our server can be imported (the colleagues' code has landed)."""
    try:
        from prefork.server.projectr import ProjectrServer  # noqa: F401
        from projectr import Project  # noqa: F401
    except ImportError:
        return False
    return True


def machine() -> dict:
    """What the results were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 1024 / 1024
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    # The servers run from this working tree: name what was not committed yet (others edit it meanwhile).
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "prefork", "projectr"], cwd=HERE.parent,
                           capture_output=True, text=True).stdout.split("\n")
    dirty = sorted(line[3:] for line in dirty if line.strip() and not line.startswith("??"))
    return dict(cpu=cpu, cores=os.cpu_count(), memory_gb=mem, kernel=platform.release(),
                python=platform.python_version(), commit=commit, dirty=dirty, load_start=_loadavg())


def versions() -> dict:
    """Versions of the peers and the tools."""
    out = {}
    for name in PEERS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    wrk = shutil.which("wrk")
    if wrk:
        out["wrk"] = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split()[1]
    return out


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Trees:
    """One project tree per server name (created on first use), sharing one vendor layer."""

    def __init__(self, base: Path, vendor_cost: float, vendor_mb: float, unrelated: int):
        self.base, self.unrelated = base, unrelated
        vendor_root, self.vendor_seconds = generate_vendor(base, vendor_cost, vendor_mb)
        self.vendor_path = str(vendor_root)
        self.cpu_iters = cpu_iterations()
        self.cache: dict[str, RefApp] = {}

    def __call__(self, name: str, modules: int = 20) -> RefApp:
        key = f"{name}-{modules}"
        if key not in self.cache:
            self.cache[key] = generate_tree(self.base / "trees" / key, modules, self.vendor_path,
                                            self.vendor_seconds, self.cpu_iters, self.unrelated)
        return self.cache[key]


def settings(args: argparse.Namespace) -> dict:
    """The knobs of this run, quick or full."""
    quick = args.quick
    return dict(quick=quick,
                rounds=args.rounds or (2 if quick else 5),
                timeout=args.timeout,
                idle_seconds=args.idle_seconds or (5.0 if quick else 30.0),
                idle_rounds=1,
                duration=args.duration or (2.0 if quick else 5.0),
                throughput_rounds=1 if quick else 2,
                worker_counts=[2, 4],
                memory_rounds=1 if quick else 2,
                memory_reloads=args.memory_reloads or (40 if quick else 100),
                realapps_rounds=args.realapps_rounds or (2 if quick else 5),
                big_modules=args.big_modules,
                load_tool="wrk" if throughput.WRK else "bench/loadgen.py")


def run_sections(args: argparse.Namespace, trees: Trees, cfg: dict, with_ours: bool, logdir: Path) -> dict:
    """Run the selected sections; return their raw results."""
    res: dict = {}
    only = set(args.only.split(",")) if args.only else {"reload", "realapps", "scaling", "scale", "throughput",
                                                         "memory", "idle"}
    loads = res.setdefault("load_by_section", {})

    def say(msg: str) -> None:
        if msg.startswith("== "):
            loads[msg[3:].split(" ")[0]] = _loadavg()  # the noise each section ran in
        print(msg, flush=True)

    peers = runners.reload_peers()
    contenders = peers + ([runners.ours(2)] + runners.ours_variants() if with_ours else [])
    if "reload" in only:
        say("== reload latency + cold start")
        edits = {r.name: (["first-leaf", "leaf", "root", "definition"] if r.name == "ours" else ["leaf", "root"])
                 for r in contenders}
        res.update(reload.run(contenders, {r.name: trees(r.name) for r in contenders}, edits, cfg["rounds"],
                              logdir, timeout=cfg["timeout"], progress=say))
    if "realapps" in only and with_ours:
        say("== real apps: Django tutorial and Flask app factory, ours vs gunicorn --reload")
        res.update(realapps.run(trees.base / "realapps", ["django", "flask"], cfg["realapps_rounds"], logdir,
                                progress=say))
    if "scaling" in only and with_ours:
        say(f"== scaling: ours at {cfg['big_modules']} modules")
        big = runners.Ours("ours-1000", f"ours: ProjectrServer -w 2, {cfg['big_modules']} modules", workers=2)
        got = reload.run([big], {big.name: trees("ours", cfg["big_modules"])}, {big.name: ["first-leaf", "leaf", "root"]},
                         cfg["rounds"], logdir, timeout=cfg["timeout"], progress=say)
        res.setdefault("reload", []).extend(got["reload"])
        res.setdefault("cold_start", []).extend(got["cold_start"])
    if "throughput" in only:
        say("== throughput")
        res["throughput"] = throughput.run(trees, cfg["worker_counts"], cfg["throughput_rounds"], cfg["duration"],
                                           logdir, progress=say)
    if "memory" in only:
        say("== memory (4 workers)")
        res["memory"] = memory.run(trees, 4, cfg["memory_rounds"], cfg["memory_reloads"] if with_ours else 0,
                                   logdir, progress=say)
    if "scale" in only and (HERE / "projectr_scale.py").exists():
        say("== projectr at scale (bench/projectr_scale.py)")
        sizes = ["100", "1000", "10000"] if cfg["quick"] else ["10", "100", "1000", "10000"]
        done = subprocess.run([sys.executable, str(HERE / "projectr_scale.py"), "--sizes", *sizes,
                               "--repeat", "3" if cfg["quick"] else "7"], capture_output=True, text=True,
                              timeout=900, start_new_session=True)
        res["projectr_scale"] = done.stdout if done.returncode == 0 else f"failed:\n{done.stderr[-2000:]}"
        say(res["projectr_scale"])
    if "idle" in only:
        say(f"== idle CPU ({cfg['idle_seconds']:.0f} s)")
        idlers = peers + ([runners.ours(2, b) for b in ("inotify", "watchdog", "polling")] if with_ours else [])
        res["idle"] = idle.run(idlers, trees, cfg["idle_seconds"], cfg["idle_rounds"], logdir, progress=say)
    return res


def notes(res: dict, logdir: Path, with_ours: bool) -> list[str]:
    """Things a reader of the table must know, some found in the servers' logs."""
    out = []
    if not with_ours:
        out.append("Our server was not importable when this ran: peers only.")
    for log in sorted(logdir.glob("*.log")):
        text = log.read_text(errors="replace")
        if "Inotify queue overflowed" in text:
            out.append(f"{log.stem}: watchdog's inotify queue overflowed ({text.count('Inotify queue overflowed')} "
                       "times): it watches every sys.path folder recursively (site-packages included), and on a "
                       "shared machine other processes' file activity floods it; changes are then lost.")
    wf = logdir / "watchfiles.log"
    if wf.exists() and "change detected" in wf.read_text(errors="replace"):
        out.append("watchfiles: on a change it sends SIGINT to waitress-serve and waits up to its default "
                   "sigint timeout (5 s) before SIGKILL; waitress-serve does not exit on SIGINT promptly, so most of "
                   "watchfiles' reload time is that wait (watchfiles --sigint-timeout shortens it).")
    try:
        importlib.import_module("inotify.adapters")
        out.append("gunicorn --reload-engine auto: the inotify engine (the `inotify` package is installed).")
    except ImportError:
        out.append("gunicorn --reload-engine auto: the polling engine (the `inotify` package is missing).")
    ours = [s for s in res.get("reload", []) + res.get("realapps", []) if s["runner"].startswith("ours")]
    failed = sum(1 for s in ours if s["phases"].get("failed"))
    twice = sum(1 for s in ours if s["phases"].get("reloads", 1) > 1)
    missing = sum(1 for s in ours if not s["phases"].get("strategy"))
    if failed or twice or missing:
        out.append(f"Our servers' logs: {failed} saves with a failed reload, {twice} saves followed by more than one "
                   f"reload line, {missing} saves without a reload line of their own (see the strategy tables).")
    if any(s["runner"] == "gunicorn-preload" for s in res.get("reload", [])):
        out.append("gunicorn --reload --preload: the reloader restarts the workers, but they fork from the "
                   "master's preloaded (stale) code, so the edit is never served (gunicorn documents the two as "
                   "incompatible).")
    return out


def main() -> None:
    """Parse flags, generate the app, run, save raw data, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (2 rounds, 5 s idle, 2 s load)")
    parser.add_argument("--rounds", type=int, help="reload rounds (default 5, quick 2)")
    parser.add_argument("--timeout", type=float, default=12.0, help="seconds before an edit counts as never served")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU window (default 30, quick 5)")
    parser.add_argument("--duration", type=float, help="seconds per throughput cell (default 5, quick 2)")
    parser.add_argument("--vendor-cost", type=float, default=1.0, help="CPU seconds of the vendor import")
    parser.add_argument("--vendor-mb", type=float, default=24.0, help="memory the vendor layer holds")
    parser.add_argument("--unrelated", type=int, default=5000, help="unrelated files in each tree")
    parser.add_argument("--big-modules", type=int, default=1000, help="project modules for the scaling run")
    parser.add_argument("--realapps-rounds", type=int, help="real-app rounds (default 5, quick 2)")
    parser.add_argument("--memory-reloads", type=int, help="reloads before the last PSS sample (default 100, quick 40)")
    parser.add_argument("--only", help="comma-separated sections: reload,realapps,scaling,scale,throughput,memory,idle")
    parser.add_argument("--no-ours", action="store_true", help="peers only")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees and logs")
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and results.png go")
    args = parser.parse_args()
    cfg = settings(args)
    with_ours = not args.no_ours and ours_available()
    base = Path(tempfile.mkdtemp(prefix="bench-"))
    logdir = base / "logs"
    logdir.mkdir()
    print(f"working in {base}; ours {'included' if with_ours else 'NOT available'}", flush=True)
    started = time.monotonic()
    try:
        info = machine()
        trees = Trees(base, args.vendor_cost, args.vendor_mb, args.unrelated)
        print(f"vendor layer: {trees.vendor_seconds:.2f} s CPU to import", flush=True)
        res = run_sections(args, trees, cfg, with_ours, logdir)
        info["load_end"] = _loadavg()
        results = dict(res, machine=info, versions=versions(), settings=cfg,
                       date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       app=dict(vendor_seconds=trees.vendor_seconds, vendor_mb=args.vendor_mb, modules=20,
                                modules_big=args.big_modules, unrelated=args.unrelated),
                       labels=_all_labels(), notes=notes(res, logdir, with_ours),
                       elapsed_s=time.monotonic() - started)
        # beside the report: a partial run (--only ... --out elsewhere) keeps the full run's raw data
        (args.out / "out").mkdir(parents=True, exist_ok=True)
        (args.out / "out" / "results.json").write_text(json.dumps(results, indent=1))
        report.write(results, args.out)
        print(f"wrote {args.out / 'RESULTS.md'} and results.png in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _all_labels() -> dict[str, str]:
    """Display names of every runner the sections use."""
    rs = runners.reload_peers() + [runners.ours(2)] + runners.ours_variants() + [runners.ours(2, b) for b in ("inotify", "watchdog", "polling")]
    labels = {r.name: r.label for r in rs}
    labels.update({"ours-1000": "ours: ProjectrServer -w 2, 1,000 modules", "gunicorn-sync": "gunicorn sync",
                   "waitress": "waitress (1 process)"})
    labels.update({r.name: r.label for r in realapps.runners() if r.name.startswith("ours")})
    return labels


if __name__ == "__main__":
    main()
