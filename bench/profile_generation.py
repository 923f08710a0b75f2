"""python -m bench.profile_generation [--modules N] [--edit leaf|root] [--edits K] [--profile]:
where a partial reload's time goes inside the generation, step by step, in one process tree.

Emulates what the server's processes do with the reference app (bench/refapp), using prefork's own
functions (prefork.generation; private names: this is a profiling tool, it follows that module):

1. the base: import the vendor layer, `gc.freeze()`;
2. generation 0: a fork of the base that imports the project from scratch (`resolve_app` under the
   generation's import recorder) -- timed, as a fresh generation;
3. for each edit: the master's plan (`project.affected`), then a fork of generation 0 that applies the
   partial reload as `prefork.generation._checked_reload` does, each step timed on its own: the reload
   set, the weak references to the old objects, the scan of every module-level container, the importer
   check, projectr's `execute()`, `resolve_app`, `gc.collect()`, the two checks, and the list of
   loaded project files that the report carries. With `--profile`, the whole step runs under cProfile
   and the top functions are printed.

Also: the cost of a fork and of a double fork of generation 0 (every worker and every partial
generation is double-forked), and a fresh generation again after the edits (the alternative a
refused partial falls back to).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.refapp import APP, LEAF, ROOT, generate_tree, set_mark
from bench.refapp.vendor import PACKAGE as VENDOR, generate_vendor


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def in_child(work, profile: bool = False) -> dict:
    """Run `work()` (returns a dict) in a forked child; return its dict plus the fork's own cost."""
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        started = time.perf_counter()
        profiler = cProfile.Profile() if profile else None
        try:
            if profiler:
                profiler.enable()
            out = work()
            if profiler:
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
                out["profile"] = text.getvalue()
            out["child_started_ms"] = _ms(started - t)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b"{}")
    out["wall_ms"] = _ms(time.perf_counter() - t)
    return out


def fork_costs(rounds: int = 7) -> tuple[float, float]:
    """Median ms of a fork (+ exit + reap) and of a double fork (the grandchild reports over a pipe)."""
    single, double = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        single.append(_ms(time.perf_counter() - t))
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os.write(w, b"x")
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        os.read(r, 1)
        double.append(_ms(time.perf_counter() - t))
        os.close(r)
        os.close(w)
    return statistics.median(single), statistics.median(double)


def partial_steps(units_spec: list[list], spec: str) -> dict:
    """The body of prefork.generation._apply_partial / _checked_reload, each step timed (in the child)."""
    from prefork import generation as g
    from prefork.apps import resolve_app
    from projectr.loader import Unit, execute

    state = STATE["gen"]
    steps: dict[str, float] = {}
    faults: dict[str, int] = {}

    def step(name, fn):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        value = fn()
        steps[name] = steps.get(name, 0.0) + _ms(time.perf_counter() - t)
        faults[name] = faults.get(name, 0) + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        return value

    t_all = time.perf_counter()
    names = step("reload set (_reload_set)", lambda: g._reload_set(units_spec, state.recorder))
    units = step("read sources", lambda: [Unit(path, name, is_pkg, g._read(path)) for name, path, is_pkg in names])
    state.app = None
    names_set = {unit.module for unit in units}
    old = step("weak refs to old objects", lambda: g._weak_old_objects(names_set))
    # What the reload must leave alone outside its set (prefork renamed this step once; follow it).
    if hasattr(g, "OutsideState"):
        outside = step("snapshot of the modules outside the set (OutsideState.take)",
                       lambda: g.OutsideState.take(names_set))
        if SECOND_SCAN:
            step("the same snapshot again (pages already copied)", lambda: g.OutsideState.take(names_set))
        checked, watched = outside.changed, len(outside.containers)
    else:
        containers = step("scan module-level containers (_containers)", lambda: g._containers(names_set))
        if SECOND_SCAN:
            step("the same scan again (pages already copied)", lambda: g._containers(names_set))
        checked = lambda: next((f"{m} changed size" for m, c, size in containers if len(c) != size), None)  # noqa: E731
        watched = len(containers)
    step("importer check (_check_importers)", lambda: _refusal(g._check_importers, names_set, state.recorder))
    gc_before = gc.get_count()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with state.recorder.recording():
            step("projectr execute()", lambda: execute(units))
            step("resolve_app", lambda: resolve_app(spec))
    tracked = len(gc.get_objects())
    step("gc.collect()", gc.collect)
    alive = step("old objects garbage? (weakref check)", lambda: [n for n, ref in old if ref() is not None])
    changed = step("outside unchanged? (the check after the reload)", checked)
    step("loaded project files (report)", lambda: g._loaded_project_files(state.recorder.root)[0])
    holders = [f"{n} held by {g._holder(ref())}" for n, ref in old if ref() is not None][:3]
    return {"steps": steps, "faults": faults, "total_ms": _ms(time.perf_counter() - t_all), "modules": [n for n, _, _ in names],
            "containers": watched, "weakrefs": len(old), "still_alive": holders or alive[:3],
            "grew": changed, "importers": REFUSALS[:],
            "gc_tracked": tracked, "gc_counts_before": gc_before, "gc_frozen": gc.get_freeze_count()}


STATE: dict = {}
REFUSALS: list[str] = []


def _refusal(check, *args) -> None:
    """Run one of prefork's checks; note its refusal instead of stopping (the profile goes on)."""
    try:
        check(*args)
    except Exception as exc:  # noqa: BLE001 - prefork.generation.Refused
        REFUSALS.append(str(exc))
SECOND_SCAN = False


def fresh_generation(root: str, spec: str) -> dict:
    """What a fresh generation does (prefork.generation._import_fresh, minus the report), timed."""
    from prefork import generation as g
    from prefork.apps import resolve_app

    t = time.perf_counter()
    recorder = g.Recorder(root)
    sys.addaudithook(recorder.audit)
    gc.freeze()
    with recorder.recording():
        app = resolve_app(spec)
    elapsed = _ms(time.perf_counter() - t)
    STATE["gen"] = g.GenerationState(app, recorder, elapsed)
    t = time.perf_counter()
    files = g._loaded_project_files(root)[0]
    return {"import_ms": elapsed, "loaded_files_ms": _ms(time.perf_counter() - t), "files": len(files)}


def _wsgi_get(app, path: str) -> int:
    """One GET through the WSGI callable, in this process (what a worker does for a request)."""
    from wsgiref.util import setup_testing_defaults

    environ: dict = {"PATH_INFO": path, "HTTP_HOST": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80"}
    setup_testing_defaults(environ)
    status = []
    body = app(environ, lambda s, h, exc_info=None: status.append(s))
    for _ in body:
        pass
    if hasattr(body, "close"):
        body.close()
    return int(status[0].split()[0])


def realapp(name: str, profile: bool) -> None:
    """The same emulation on a real app (tests/realapps): what a fresh generation and a new worker pay.

    Learns the base's modules from a cold import (in a child, as generation 0 reports them), imports
    them here (the base), then forks: a fresh generation (import the project, resolve the app), and
    from it a "worker" that serves its first and second request of the index page in-process.
    """
    from bench import realapps

    base = Path(tempfile.mkdtemp(prefix=f"bench-profgen-{name}-"))
    src = realapps.generate(base, [name])[name]
    app = realapps.copy_app(src, base / "app", name)
    os.chdir(app.tree)
    sys.path.insert(0, app.tree)

    def learn() -> dict:
        before = set(sys.modules)
        from prefork.apps import resolve_app
        resolve_app(app.spec)
        from prefork.discover import is_project_file
        return {"modules": [n for n, m in list(sys.modules.items()) if n not in before and not
                            is_project_file(os.path.abspath(getattr(m, "__file__", "") or "/"), app.tree)]}

    cold = in_child(learn)
    t = time.perf_counter()
    imported = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in cold["modules"]:
            try:
                __import__(module)
                imported += 1
            except BaseException:  # noqa: BLE001 - as the base does: left to the generations
                pass
    gc.freeze()
    print(f"{name}: base preloaded {imported} of {len(cold['modules'])} modules in "
          f"{_ms(time.perf_counter() - t):.0f} ms (cold import in a child: {cold['wall_ms']:.0f} ms)")

    def generation_then_worker() -> dict:
        out = fresh_generation(app.tree, app.spec)

        def worker() -> dict:
            from prefork.apps import resolve_app
            served = resolve_app(app.spec)
            t1 = time.perf_counter()
            status = _wsgi_get(served, app.page)
            first = _ms(time.perf_counter() - t1)
            t2 = time.perf_counter()
            _wsgi_get(served, app.page)
            return {"first_ms": first, "second_ms": _ms(time.perf_counter() - t2), "status": status}

        out["worker"] = in_child(worker, profile=profile)
        return out

    for n in range(3):
        got = in_child(generation_then_worker, profile=profile and n == 2)
        w = got["worker"]
        print(f"  fresh generation: import {got['import_ms']:.1f} ms (+{got['child_started_ms']:.1f} ms fork); "
              f"a worker forked from it: first {app.page} {w['first_ms']:.1f} ms (status {w['status']}), "
              f"second {w['second_ms']:.1f} ms (fork {w['child_started_ms']:.1f} ms)")
        if n == 2 and profile:
            print("\ncProfile of the fresh generation's import (tottime):\n")
            print(got.get("profile", ""))
            print("cProfile of the worker's two requests (tottime):\n")
            print(w.get("profile", ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_generation", description=__doc__)
    parser.add_argument("--modules", type=int, default=20)
    parser.add_argument("--edit", choices=("leaf", "root"), default="leaf")
    parser.add_argument("--edits", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one partial step (the last edit)")
    parser.add_argument("--second-scan", action="store_true",
                        help="run the container scan twice: the second pays no copy-on-write faults")
    parser.add_argument("--realapp", choices=("django", "flask"),
                        help="instead: a fresh generation and a new worker's first request on a real app")
    args = parser.parse_args()
    if args.realapp:
        realapp(args.realapp, args.profile)
        return
    global SECOND_SCAN
    SECOND_SCAN = args.second_scan
    base = Path(tempfile.mkdtemp(prefix="bench-profgen-"))
    vendor, seconds = generate_vendor(base, 1.0, 24.0)
    app = generate_tree(base / "tree", args.modules, str(vendor), seconds, 1000, unrelated=0)
    sys.path[:0] = [app.tree, app.vendor_path]
    from projectr import Project
    from prefork.server.projectr import module_names

    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    t = time.perf_counter()
    __import__(VENDOR)
    gc.freeze()
    print(f"base: vendor layer imported in {_ms(time.perf_counter() - t):.0f} ms "
          f"({len(sys.modules)} modules, {gc.get_freeze_count()} objects frozen)")
    project = Project.from_file(os.path.join(app.tree, "project.py"))
    fresh = [in_child(lambda: fresh_generation(app.tree, APP)) for _ in range(3)]
    print("fresh generation (fork of the base, import the project, resolve the app): "
          + ", ".join(f"{f['import_ms']:.1f} ms import (+{f['child_started_ms']:.1f} ms fork)" for f in fresh))
    fresh_generation(app.tree, APP)  # this process is generation 0 from here on
    single, double = fork_costs()
    print(f"generation 0: fork + exit + reap {single:.1f} ms; double fork until the grandchild runs {double:.1f} ms "
          f"(RSS {int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20:.0f} MB)")
    target = Path(app.tree) / (LEAF if args.edit == "leaf" else ROOT)
    runs = []
    for n in range(args.edits):
        set_mark(target, ("l" if args.edit == "leaf" else "r") + str(100 + n), 100 + n)
        t = time.perf_counter()
        affected = project.affected([str(target)])
        plan_ms = _ms(time.perf_counter() - t)
        units = [[name, path, os.path.basename(path) == "__init__.py"]
                 for name, path in zip(module_names(project, affected), affected)]
        out = in_child(lambda: partial_steps(units, APP), profile=args.profile and n == args.edits - 1)
        if "error" in out:
            raise SystemExit(f"partial step failed: {out['error']}")
        out["plan_ms"] = plan_ms
        runs.append(out)
    print(f"\npartial reload of {len(runs[0]['modules'])} modules ({', '.join(runs[0]['modules'])}); "
          f"{runs[0]['containers']} module-level containers checked, {runs[0]['weakrefs']} weak references, "
          f"{runs[0]['gc_tracked']} objects tracked by the GC after the reload, "
          f"{runs[0]['gc_frozen']} frozen; medians of {len(runs)} edits (min-max):\n")
    print("| step | median ms | min | max | page faults (median) |")
    print("|---|---:|---:|---:|---:|")

    def row(name: str, values: list[float], faults: list[int] | None = None) -> None:
        extra = f"{statistics.median(faults):.0f}" if faults else ""
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | {extra} |")

    row("master: project.affected()", [r["plan_ms"] for r in runs])
    row("fork of generation 0 until the child runs", [r["child_started_ms"] for r in runs])
    for name in runs[0]["steps"]:
        row(name, [r["steps"][name] for r in runs], [r["faults"][name] for r in runs])
    row("**partial step total (the generation's 'own work')**", [r["total_ms"] for r in runs])
    row("fork + step + report + exit (wall)", [r["wall_ms"] for r in runs])
    last = runs[-1]
    if last["still_alive"] or last["grew"] or last["importers"]:
        print(f"\nprefork would refuse this partial reload: still referenced: {last['still_alive']}; "
              f"outside changed: {last['grew']}; importers: {last['importers']}")
    if runs[-1].get("profile"):
        print("\ncProfile of the last partial step (tottime):\n")
        print(runs[-1]["profile"])


if __name__ == "__main__":
    main()
