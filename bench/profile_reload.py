"""python -m bench.profile_reload [--modules N] [--edit leaf|root]: where our reload's time goes, in-process.

Generates a reference tree (vendor layer included), loads it with projectr as the master does, then,
for one edit: the watcher's wake-up and changed_files(), project.load() under cProfile, the cost of a
fork of this (heavy) process, and what the same load costs in a forked child (the trial). Prints a
table and the top of the profile.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import select
import sys
import tempfile
import time
from pathlib import Path

from bench.refapp import LEAF, ROOT, generate_tree, set_mark
from bench.refapp.vendor import generate_vendor


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def fork_cost(rounds: int = 5) -> float:
    """Median seconds to fork this process and reap a child that exits at once."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def watcher_wake(watcher, path: Path, serial: int, mark: str) -> tuple[float, float, list[str]]:
    """Write `path`, wait on the watcher fd; return (write->readable, changed_files() time, changes)."""
    t0 = time.perf_counter()
    set_mark(path, mark, serial)
    readable, _, _ = select.select([watcher], [], [], 5.0)
    t1 = time.perf_counter()
    changed = watcher.changed_files() if readable else []
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, changed


def trial_cost(project) -> tuple[float, float]:
    """A trial as the server runs it, simplified: fork, project.load() in the child, report, exit.

    Returns (seconds until the report arrived, seconds until EOF: the child's exit tore down its copy
    of the address space). The server acts on EOF; acting on the report saves the difference.
    """
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        project.load()
        os.write(w, b"ok")
        os._exit(0)
    os.close(w)
    os.read(r, 10)
    reported = time.perf_counter() - t
    os.read(r, 10)  # EOF: the child has exited
    eof = time.perf_counter() - t
    os.close(r)
    os.waitpid(pid, 0)
    return reported, eof


class GcPauses:
    """Sum the garbage collector's pauses per generation (gc.callbacks), to tell them from real work."""

    def __init__(self) -> None:
        self.total = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total[info["generation"]] += time.perf_counter() - self._start
            self.count[info["generation"]] += 1

    def take(self) -> str:
        text = ", ".join(f"gen{g}: {self.count[g]} x = {self.total[g] * 1000:.1f} ms" for g in range(3))
        self.total, self.count = [0.0, 0.0, 0.0], [0, 0, 0]
        return text


def main() -> None:
    """Generate, load, edit once, and report each cost."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_reload", description=__doc__)
    parser.add_argument("--modules", type=int, default=20)
    parser.add_argument("--edit", choices=("leaf", "root"), default="leaf")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    vendor, seconds = generate_vendor(base, 1.0, 24.0)
    app = generate_tree(base / "tree", args.modules, str(vendor), seconds, 1000, unrelated=5000)
    sys.path[:0] = [app.tree, app.vendor_path]
    from projectr import Project

    t = time.perf_counter()
    project = Project.from_file(os.path.join(app.tree, "project.py"))
    project.load()
    print(f"initial load of {args.modules} modules (+ vendor): {_ms(time.perf_counter() - t)}")
    target = Path(app.tree) / (LEAF if args.edit == "leaf" else ROOT)
    mark = ("l" if args.edit == "leaf" else "r") + "9"
    # The server's watcher stays open: it vouches for the files it saw, so load() checks only those.
    watcher = project.watch_changes(backend=args.backend)
    wake, changed_t, changed = watcher_wake(watcher, target, 9, mark)
    print(f"watcher: write -> fd readable {_ms(wake)}; changed_files() {_ms(changed_t)} -> {len(changed)} file(s)")
    t = time.perf_counter()
    affected = project.affected([str(target)])
    print(f"project.affected(): {_ms(time.perf_counter() - t)} ({len(affected)} files)")
    print(f"fork + exit + reap of this process: {_ms(fork_cost())}")
    reported, eof = trial_cost(project)
    print(f"trial (fork, load in the child): report after {_ms(reported)}, EOF after {_ms(eof)}")
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    loaded = project.load()
    profiler.disable()
    print(f"project.load() in this process: {_ms(time.perf_counter() - t)} ({len(loaded)} files)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    pauses = GcPauses()
    print(f"objects tracked by the GC: {len(gc.get_objects())}")
    for serial in range(10, 13):
        wake, changed_t, changed = watcher_wake(watcher, target, serial, mark + str(serial))
        reported, eof = trial_cost(project)
        pauses.take()
        t = time.perf_counter()
        project.load()
        loaded = time.perf_counter() - t
        t = time.perf_counter()
        forks = [fork_cost(1) for _ in range(2)]
        print(f"edit {serial}: wake {_ms(wake)}, changed_files {_ms(changed_t)}, trial report {_ms(reported)} "
              f"(EOF {_ms(eof)}), load {_ms(loaded)}, 2 forks {_ms(sum(forks))}; GC in the load: {pauses.take()}")
    watcher.close()


if __name__ == "__main__":
    main()
