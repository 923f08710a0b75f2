"""Memory: total PSS (/proc/PID/smaps_rollup) of every process of a server serving the heavy app.

Ours runs as the command line does (`prefork APP --project project.py --reload -w 4`): the master (no
app code), the base (the vendor layer, warm), the serving generation (the project) and 4 workers, all
children of the master; every process is counted. Against gunicorn without --preload (what --reload
requires: every worker imports the vendor layer itself) and gunicorn --preload (shares it, but cannot
reload). Ours is then reloaded `reloads` times (leaf and root edits alternating, each waited for until
every worker serves it) and measured every quarter of the way: the PSS must not grow with the number
of generations that came and went, and the process count must stay the same (no generation left over).
Generation 0 imports everything cold before the base has preloaded anything; once the base has, the
server replaces it by a generation forked from the base (the first sample waits until the PSS is
stable, so it is taken after that). Every server first serves the pages the reloads' probes ask for,
so that the first sample and the later ones count the same requests: every worker answers them
before each sample. Last, project.py is saved: a
fresh generation from the base.
Processes are grouped by role from their titles (setproctitle: `prefork base`, `prefork generation N`,
`prefork worker i :port`, `gunicorn: worker [...]`).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.procs import Spawned, free_port, http_get, parse_version, session_pids
from bench.refapp import RefApp
from bench.reload import EDITS, probe
from bench.runners import Gunicorn, Ours, Runner


@dataclass
class Memory:
    runner: str
    label: str
    when: str           # "started" or "after N reloads"
    round: int
    processes: int
    pss_mb: float
    reloads: int = 0
    uss_mb: float = 0.0                                 # private (unshared) memory of all processes
    roles: dict = field(default_factory=dict)           # role -> {"n": count, "pss_mb": ..., "uss_mb": ...}
    titles: list = field(default_factory=list)          # process titles (cmdline), sorted


def smaps(pid: int) -> tuple[int, int]:
    """(PSS, private) of pid in KiB; (0, 0) if it is gone."""
    pss = private = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return pss, private


def title(pid: int) -> str:
    """The process's command line as ps shows it (its title when setproctitle renamed it)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def role(text: str) -> str:
    """master, base, generation, worker or other, from a process title."""
    for name in ("generation", "base", "worker", "master"):
        if f"prefork {name}" in text or f"gunicorn: {name}" in text:
            return name
    return "other"


def snapshot(proc: Spawned) -> tuple[list[int], float, float, dict, list[str]]:
    """(pids, PSS MB, private MB, per-role totals, titles) of the server's session now."""
    pids = session_pids(proc.pid)
    roles: dict = {}
    total = private = 0
    titles = []
    for pid in pids:
        pss, priv = smaps(pid)
        name = title(pid)
        titles.append(name)
        r = roles.setdefault(role(name), {"n": 0, "pss_mb": 0.0, "uss_mb": 0.0})
        r["n"] += 1
        r["pss_mb"] += pss / 1024
        r["uss_mb"] += priv / 1024
        total, private = total + pss, private + priv
    return pids, total / 1024, private / 1024, roles, sorted(titles)


def stable(proc: Spawned, processes: int, timeout: float = 60.0) -> tuple[list[int], float, float, dict, list[str]]:
    """Wait until the session holds exactly `processes` processes and their PSS total stops moving.

    Workers that import the app lazily are still growing at first; old workers and generations of a
    reload are still exiting for a moment after it.
    """
    deadline, last = time.monotonic() + timeout, -1.0
    snap = snapshot(proc)
    while time.monotonic() < deadline:
        snap = snapshot(proc)
        if len(snap[0]) == processes and abs(snap[1] - last) < 0.01 * snap[1]:
            break
        last = snap[1]
        time.sleep(1.0)
    return snap


def contenders(workers: int) -> list[tuple[Runner, int]]:
    """(runner, processes expected): ours vs gunicorn without and with --preload, `workers` workers each."""
    return [(Ours("ours-cli", f"ours: prefork --project --reload -w {workers}", workers=workers, cli=True), workers + 3),
            (Gunicorn("gunicorn", f"gunicorn --reload -w {workers}", workers=workers), workers + 1),
            (Gunicorn("gunicorn-preload", f"gunicorn --reload --preload -w {workers}", workers=workers,
                      preload=True), workers + 1)]


def run(apps: Callable[[str], RefApp], workers: int, rounds: int, reloads: int, logdir: Path,
        progress: Callable[[str], None] = print) -> list[dict]:
    """Alternate the contenders for `rounds` rounds; return PSS samples as dicts."""
    out: list[Memory] = []
    for round_no in range(rounds):
        for runner, expected in contenders(workers):
            app = apps(runner.name)
            port = free_port()
            try:
                proc, _ = runner.start_ready(app, port, logdir)
            except RuntimeError as exc:
                progress(f"  {runner.name}: failed: {str(exc)[:300]}")
                continue
            try:
                out.append(_sample(runner, proc, port, workers, expected, round_no, 0, "started"))
                progress(f"  round {round_no} {runner.name}: {_describe(out[-1])}")
                if runner.name.startswith("ours") and reloads:
                    done = 0
                    for step in (reloads // 4, reloads // 2, 3 * reloads // 4, reloads):
                        missed = _reload(app, port, workers, done, step - done)
                        done = step
                        out.append(_sample(runner, proc, port, workers, expected, round_no, done,
                                           f"after {done} reloads"))
                        progress(f"  round {round_no} {runner.name} after {done} reloads: {_describe(out[-1])}"
                                 + (f"; {missed} edits not served in 20 s" if missed else ""))
                if runner.name.startswith("ours"):
                    # A save of project.py: a fresh generation forked from the (now warm) base.
                    _fresh(app, port, workers, proc)
                    out.append(_sample(runner, proc, port, workers, expected, round_no, reloads + 1, FRESH))
                    progress(f"  round {round_no} {runner.name} {FRESH}: {_describe(out[-1])}")
            finally:
                proc.stop()
    return [asdict(m) for m in out]


def _serve_pages(port: int, workers: int) -> None:
    """Make every worker serve the pages the reloads' probes ask for, before each sample.

    A worker's private memory grows with the code its requests have run (each page of shared objects
    it touches is copied): a worker that served nothing is about 0.7 MB smaller. On one shared socket
    the idle worker that wakes first takes a connection, so sequential requests may all go to one
    worker: the requests come from `2 * workers` clients at once, round after round, until every
    worker has answered (10 s at most).
    """
    seen: set[int] = set()
    deadline = time.monotonic() + 10.0
    with ThreadPoolExecutor(2 * workers) as pool:
        while len(seen) < workers and time.monotonic() < deadline:
            for response in pool.map(lambda _: http_get(port, "/"), range(4 * workers)):
                version = parse_version(response.body) if response.status == 200 else None
                if version is not None:
                    seen.add(version[2])
            list(pool.map(lambda _: http_get(port, "/hello"), range(4 * workers)))


def _sample(runner: Runner, proc: Spawned, port: int, workers: int, expected: int, round_no: int, reloads: int,
            when: str) -> Memory:
    """Once the processes settled (ours: generation 0 replaced, or a reload's old workers gone), every
    worker serves the probes' pages, then the PSS of the settled tree."""
    stable(proc, expected)
    _serve_pages(port, workers)
    pids, pss, uss, roles, titles = stable(proc, expected)
    return Memory(runner.name, runner.label, when, round_no, len(pids), pss, reloads, uss, roles, titles)


def _describe(m: Memory) -> str:
    roles = ", ".join(f"{k} {v['n']} x {v['pss_mb'] / v['n']:.1f}" for k, v in sorted(m.roles.items()))
    return f"{m.processes} processes, PSS {m.pss_mb:.1f} MB (private {m.uss_mb:.1f}); {roles}"


FRESH = "after a fresh generation (project.py saved)"


def _fresh(app: RefApp, port: int, workers: int, proc: Spawned) -> None:
    """Save project.py (a fresh generation from the base) and wait until only new workers answer."""
    old = set(session_pids(proc.pid))
    edit = EDITS["definition"]
    t0 = time.monotonic()
    edit.apply(Path(app.tree), 9999)
    probe(port, 2 * workers, lambda v: edit.is_new(v, 9999, old), t0, 20.0)


def _reload(app: RefApp, port: int, workers: int, start: int, count: int) -> int:
    """Apply `count` edits (leaf and root alternating), each waited for as the reload benchmark does.

    Returns how many were not served within 20 s.
    """
    missed = 0
    for n in range(start, start + count):
        serial = 5000 + n
        edit = EDITS["leaf" if n % 2 == 0 else "root"]
        t0 = time.monotonic()
        edit.apply(Path(app.tree), serial)
        latency, _, _, _ = probe(port, 2 * workers, lambda v: edit.is_new(v, serial, set()), t0, 20.0)
        missed += latency is None
        http_get(port, "/hello")
    return missed
