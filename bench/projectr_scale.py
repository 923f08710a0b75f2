"""How projectr scales: affected-set time, reload time and watcher wake latency vs project size.

Generates projects of 10, 100, 1,000 and 10,000 modules (a 4-ary tree of imports spread over
sub-packages of 100 modules: module i imports module (i-1)//4, so the root reaches everything and a
leaf reaches nothing) and prints a table:

    python bench/projectr_scale.py [--sizes 10 100 1000 10000] [--repeat 7]

Columns: first load; affected-set time for a leaf edit and a root edit (median); time to reload
a leaf edit (write + `load()`), without a watcher (load() stats every file) and with an open inotify
watcher (the server's case: load() checks only what the watcher saw); the watcher's latency from
the start of a save (open+write+close in another thread) to select() waking and to changed_files() returning
(inotify backend: the batch is ready once the file is closed; the 5 ms debounce window only while it is open). Files are aged one hour after generation, as in
a project at rest (freshly written files are "racily clean" and cost a hash on every stat scan).
"""
from __future__ import annotations

import argparse
import os
import select
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projectr import Project  # noqa: E402

PER_PACKAGE = 100


def generate(root: str, pkg: str, n: int) -> Project:
    """Write n modules under root/pkg and declare them (each module imports its tree parent)."""
    os.makedirs(os.path.join(root, pkg))
    open(os.path.join(root, pkg, "__init__.py"), "w").close()
    p = Project(f"{pkg}", root=root)
    with p.directory(pkg):
        p.file("__init__")
        for sub in range((n + PER_PACKAGE - 1) // PER_PACKAGE):
            os.makedirs(os.path.join(root, pkg, f"s{sub}"))
            open(os.path.join(root, pkg, f"s{sub}", "__init__.py"), "w").close()
            p.file(f"s{sub}/__init__")
        for i in range(n):
            path = os.path.join(root, pkg, f"s{i // PER_PACKAGE}", f"m{i}.py")
            with open(path, "w") as f:
                f.write(_source(pkg, i, 0))
            p.file(f"s{i // PER_PACKAGE}/m{i}")
    return p


def _source(pkg: str, i: int, version: int) -> str:
    if i == 0:
        return f"VALUE = {version}\n"
    parent = (i - 1) // 4
    return (f"from {pkg}.s{parent // PER_PACKAGE}.m{parent} import VALUE as _parent\n"
            f"VALUE = _parent + 1  # v{version}\n"
            "def handler(request):\n    return VALUE\n")


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n: int, repeat: int) -> dict[str, float]:
    """Build one project of n modules and measure it."""
    with tempfile.TemporaryDirectory() as root:
        pkg = f"bench{n}"
        p = generate(root, pkg, n)
        aged = time.time() - 3600
        for path in p.source_files:
            os.utime(path, (aged, aged))
        start = time.perf_counter()
        p.load()
        first = time.perf_counter() - start
        leaf = os.path.join(root, pkg, f"s{(n - 1) // PER_PACKAGE}", f"m{n - 1}.py")
        top = os.path.join(root, pkg, "s0", "m0.py")
        result = {
            "modules": n,
            "first_load_s": first,
            "affected_leaf_us": _median_time(lambda: p.affected([leaf]), max(repeat, 200)) * 1e6,
            "affected_root_ms": _median_time(lambda: p.affected([top]), repeat) * 1e3,
            "affected_root_size": len(p.affected([top])),
        }
        versions = iter(range(1, 10**6))

        def timed_load(watcher=None) -> float:
            with open(leaf, "w") as f:
                f.write(_source(pkg, n - 1, next(versions)))
            if watcher is not None:
                select.select([watcher], [], [], 5)
                watcher.changed_files()
            start = time.perf_counter()
            assert p.load() == [leaf]
            return time.perf_counter() - start

        result["reload_leaf_ms"] = statistics.median(timed_load() for _ in range(repeat)) * 1e3
        with p.watch_changes() as w:
            p.load()  # the first load after a watcher starts checks everything
            result["reload_leaf_watched_ms"] = statistics.median(timed_load(w) for _ in range(repeat)) * 1e3
        result["wake_ms"], result["batch_ms"] = _wake_latency(p, pkg, leaf, n, repeat)
        for key in [k for k in sys.modules if k == pkg or k.startswith(pkg + ".")]:
            del sys.modules[key]
        return result


def _wake_latency(p: Project, pkg: str, leaf: str, n: int, repeat: int) -> tuple[float, float]:
    """Median ms from the start of a save (in another thread) to the fd waking / the batch returned."""
    wakes, batches = [], []
    with p.watch_changes() as w:
        for v in range(repeat):
            done: list[float] = []

            def write(done: list[float] = done, v: int = v) -> None:
                done.append(time.perf_counter())  # the save starts
                with open(leaf, "w") as f:
                    f.write(_source(pkg, n - 1, 1000 + v))

            writer = threading.Thread(target=write)
            writer.start()
            select.select([w], [], [], 5)
            woke = time.perf_counter()
            changed = w.changed_files()
            while not changed:  # the burst is still open ([]): the fd wakes again when its window closes
                if not select.select([w], [], [], 5)[0]:
                    break
                changed = w.changed_files()
            got = time.perf_counter()
            writer.join()
            assert changed == [leaf], changed
            wakes.append((woke - done[0]) * 1e3)
            batches.append((got - done[0]) * 1e3)
    return statistics.median(wakes), statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    header = (f"{'modules':>8} {'first load':>11} {'affected leaf':>14} {'affected root':>14} "
              f"{'(files)':>8} {'reload leaf':>12} {'(watched)':>10} {'wake':>8} {'batch':>8}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        r = measure(n, args.repeat)
        print(f"{r['modules']:>8} {r['first_load_s']:>10.2f}s {r['affected_leaf_us']:>11.1f} us "
              f"{r['affected_root_ms']:>11.2f} ms {r['affected_root_size']:>8} {r['reload_leaf_ms']:>9.2f} ms "
              f"{r['reload_leaf_watched_ms']:>7.2f} ms "
              f"{r['wake_ms']:>5.2f} ms {r['batch_ms']:>5.2f} ms", flush=True)


if __name__ == "__main__":
    main()
