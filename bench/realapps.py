"""Real apps: save-to-served time on the Django tutorial project and on a Flask app factory.

The apps and their edits are the test suite's (tests/realapps/apps.py: `generate_django`,
`generate_flask`, `DJANGO_EDITS`, `FLASK_EDITS`; saved with tests/realapps/harness.py's `edit`, which
moves the mtime to a later second as an editor's save does). Each server gets its own copy of the
generated app and runs from the app's folder, as a developer would start it:

- ours: `prefork APP --reload -w 2` (zero configuration: the folder is the project), plus
  `--bind 127.0.0.1:PORT --shared-port` so that both servers answer on one port, and `--log-level debug`
  so that the bench can read each reload's plan and strategy from the log;
- gunicorn: `gunicorn --reload --reload-engine auto -w 2 APP` (auto = inotify when installed).

Two edits, each toggled back and forth (the first save applies the test suite's change, the next one
reverts it): VIEW (the index view's ordering) and MODEL (a model property the index page shows).
Latency = bench/reload.py's "every worker" probe: from the write to the first of 2 x workers
consecutive fresh-connection answers of the index page that differ from the page served before the
save (the page is deterministic: no pid, no time). A background client counts the failed requests to
a cheap page of the same app inside each window. Servers alternate, round after round.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.procs import Response, free_port, http_get, session_pids
from bench.refapp import age_tree
from bench.reload import (BackgroundClient, ColdStart, ReloadSample, parse_phases, probe_page, settle)
from bench.runners import Gunicorn, Ours, Runner

ROOT = Path(__file__).resolve().parent.parent
PAUSE = 1.0          # seconds between edits (the old workers retire, lazy imports finish)
TIMEOUT = 20.0       # seconds before an edit counts as never served


@dataclass
class RealApp:
    """A generated real app, as the runners need it (the same attributes as bench.refapp.RefApp)."""

    name: str              # "django" or "flask"
    tree: str              # the app's folder: the servers' working directory
    spec: str              # "module:attr"
    page: str              # the page the probe reads (shows both edits)
    ready_path: str        # a cheap page: ready check and background client
    edits: dict = field(default_factory=dict)   # edit name -> tests.realapps.apps.Change
    pythonpath: str = ""   # none: the servers run from the folder, as a developer starts them


def _suite():
    """tests/realapps (importable from the repository root)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.realapps import apps, harness
    return apps, harness


# Which of the suite's edit cases the bench uses, and the page that shows them.
CHOICES = {
    "django": dict(generate="generate_django", edits="DJANGO_EDITS", page="/polls/", ready="/polls/about/",
                   use={"view": "view", "model": "model_property"}),
    "flask": dict(generate="generate_flask", edits="FLASK_EDITS", page="/products", ready="/about",
                  use={"view": "view", "model": "model_property"}),
}


def generate(base: Path, names: list[str]) -> dict[str, Path]:
    """Generate each app once into base/src-NAME (kept: a second call reuses it); return the folders."""
    apps, _ = _suite()
    out = {}
    for name in names:
        out[name] = base / f"src-{name}"
        if not (out[name] / ".bench-spec").exists():
            shutil.rmtree(out[name], ignore_errors=True)
            spec = getattr(apps, CHOICES[name]["generate"])(out[name])
            (out[name] / ".bench-spec").write_text(spec.app)
    return out


def copy_app(src: Path, dest: Path, name: str) -> RealApp:
    """One server's copy of a generated app (dated an hour back: a project at rest)."""
    apps, _ = _suite()
    if not dest.exists():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".bench-spec"))
        age_tree(dest)
    choice = CHOICES[name]
    cases = getattr(apps, choice["edits"])
    edits = {label: cases[case].changes[0] for label, case in choice["use"].items()}
    return RealApp(name, str(dest), (src / ".bench-spec").read_text(), choice["page"], choice["ready"], edits)


def toggle(app: RealApp, edit: str) -> str:
    """Save the edit, or its reverse if it is applied; return "apply" or "revert"."""
    _, harness = _suite()
    change = app.edits[edit]
    path = Path(app.tree) / change.path
    if change.old in path.read_text():
        harness.edit(path, change.old, change.new, atomic=change.atomic)
        return "apply"
    harness.edit(path, change.new, change.old, atomic=change.atomic)
    return "revert"


def runners() -> list[Runner]:
    """Ours as a developer types it (zero config, from the app's folder) vs gunicorn --reload."""
    return [Ours("ours-cli-zero", "ours: prefork APP --reload -w 2", workers=2, cli=True, project_file=False),
            Gunicorn("gunicorn", "gunicorn --reload -w 2", workers=2)]


def _stable_page(port: int, path: str, count: int, deadline: float) -> str | None:
    """The page every worker serves now (`count` equal answers in a row), or None."""
    while time.monotonic() < deadline:
        bodies = []
        for _ in range(count):
            r = http_get(port, path, timeout=5.0)
            bodies.append(r.body if r.status == 200 else None)
        if bodies[0] is not None and all(b == bodies[0] for b in bodies):
            return bodies[0]
        time.sleep(0.1)
    return None


def run_server(runner: Runner, app: RealApp, edits: list[str], round_no: int, logdir: Path,
               expected: dict, timeout: float = TIMEOUT) -> tuple[ColdStart, list[dict]]:
    """Start one server in the app's folder, time each edit, stop it."""
    port = free_port()
    proc, cold = runner.start_ready(app, port, logdir, timeout=90.0)
    need = 2 * runner.workers
    samples, windows = [], []
    bg = None
    try:
        settle(port, PAUSE, app.ready_path)
        bg = BackgroundClient(port, logdir, f"{app.name}-{runner.name}", path=app.ready_path)
        settle(port, 0.3, app.ready_path)
        for name in edits:
            old_body = _stable_page(port, app.page, need, time.monotonic() + 30)
            if old_body is None:
                raise RuntimeError(f"{runner.name} on {app.name}: {app.page} does not answer the same page twice")
            old_pids = set(session_pids(proc.pid))
            log_offset = len(proc.log_text())
            t0_wall, t0 = time.time(), time.monotonic()
            direction = toggle(app, name)
            bodies: list[str] = []

            def check(r: Response) -> bool | None:
                if r.status != 200:
                    return None
                if r.body != old_body:
                    bodies.append(r.body)
                    return True
                return False

            latency, first_new, errors = probe_page(port, app.page, need, check, t0, timeout)
            t1 = time.monotonic()
            sample = ReloadSample(runner.name, name, round_no, latency, first_new, 0, 0, 0.0, errors,
                                  workers_restarted=bool(set(session_pids(proc.pid)) - old_pids))
            settle(port, PAUSE, app.ready_path)
            sample.phases = parse_phases(proc.log_text()[log_offset:], t0_wall)
            # The page after the save must be the same whoever serves it: the first server to serve a
            # state fixes its page; a different page later is reported (never expected).
            state = (name, direction, tuple(sorted(_applied(app).items())))
            digest = hashlib.sha1(bodies[-1].encode()).hexdigest()[:12] if bodies and latency is not None else None
            known = expected.setdefault(state, digest) if digest else None
            samples.append(dict(asdict(sample), app=app.name, direction=direction, page_digest=digest,
                                page_matches=None if digest is None else known == digest))
            windows.append((t0, t1))
    finally:
        if bg is not None:
            bg.stop()
        proc.stop()
    for sample, (t0, t1) in zip(samples, windows):
        sample["failed"], sample["requests"], sample["stall"] = bg.window(t0, t1)
    return ColdStart(runner.name, round_no, cold), samples


def _applied(app: RealApp) -> dict[str, bool]:
    """Which edits are applied now (the page depends on all of them)."""
    out = {}
    for label, change in app.edits.items():
        out[label] = change.old not in (Path(app.tree) / change.path).read_text()
    return out


def run(base: Path, names: list[str], rounds: int, logdir: Path, edits_per_start: int = 2,
        progress: Callable[[str], None] = print) -> dict:
    """Generate the apps, then alternate ours and gunicorn for `rounds` rounds on each app.

    Each start applies VIEW and MODEL `edits_per_start` times each (VIEW, MODEL, VIEW, MODEL...,
    every save toggling its edit). Returns cold starts and samples as dicts (each with its app).
    """
    base.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    sources = generate(base, names)
    progress(f"  generated {', '.join(names)} in {time.monotonic() - t:.1f} s")
    colds, samples = [], []
    for name in names:
        applog = logdir / f"realapps-{name}"
        applog.mkdir(parents=True, exist_ok=True)
        expected: dict = {}
        contenders = runners()
        for round_no in range(rounds):
            order = contenders if round_no % 2 == 0 else contenders[::-1]
            for runner in order:
                app = copy_app(sources[name], base / f"{runner.name}-{name}", name)
                try:
                    cold, got = run_server(runner, app, ["view", "model"] * edits_per_start, round_no, applog,
                                           expected)
                except RuntimeError as exc:
                    progress(f"  {name} {runner.name}: failed: {str(exc)[:400]}")
                    continue
                colds.append(dict(asdict(cold), app=name))
                samples.extend(got)
                lat = ", ".join(f"{s['edit']}={_ms(s['latency'])}"
                                + (f" ({s['phases']['strategy']})" if s["phases"].get("strategy") else "")
                                for s in got)
                progress(f"  {name} round {round_no} {runner.name}: cold {cold.seconds * 1000:.0f} ms; {lat}; "
                         f"failed {sum(s['failed'] for s in got)}")
    return {"realapps_cold": colds, "realapps": samples}


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.realapps", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default="django,flask")
    parser.add_argument("--out", type=Path, help="write the raw samples here (JSON)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-realapps-"))
    print(f"working in {work}")
    res = run(work / "apps", args.apps.split(","), args.rounds, work / "logs")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
