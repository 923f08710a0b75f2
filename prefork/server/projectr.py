"""ProjectrServer: a prefork Server whose reloads serve exactly what a fresh start would serve.

The master never imports the app. It forks a *base* (the app's third-party modules, warm) and
asks it for generation 0, which imports the project and forks the workers. Generation 0 imported
the third-party modules before the base had them; once the base has preloaded them, the master
replaces it (when idle) by a generation forked from the base, so that every worker shares the
base's copy. On each reload the master plans (prefork.server.strategy) one of:

- respawn: the serving generation forks new workers (a template, or a module that the framework
  imports only at the first request, changed);
- partial: a copy of the serving generation re-executes the affected modules and proves the result
  equal to a fresh import (no warning, nothing outside the set kept the old code, nothing
  registered twice); if it cannot, a fresh generation follows;
- fresh: a new generation from the base imports the whole project.

Old workers serve until the new ones report ready; a generation that fails, hangs (killed at
``reload_timeout``, the log names file and line) or whose workers do not boot is dropped and the
old one serves on. Nothing is committed in the master: the changes stay pending until served.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefork import forks
from prefork.discover import declare_file, is_project_file, watch_tree
from prefork.notify import notify
from prefork.server import Server
from prefork.server.failures import describe_load_error
from prefork.server.generations import GenerationProcess, Generations
from prefork.server.strategy import Plan, plan_reload
from projectr import LoadError, Project, changes

log = logging.getLogger("prefork.reload")

STARTUP_TIMEOUT = 120.0  # seconds generation 0 may take to import the app cold
_MAX_TRIES = 4  # a reload starts over at most this often for files that change under it
# What a checked partial reload costs at least before one was measured (a pass over every module
# of the process, a collection, a fork): below it, importing the project afresh is as fast.
_PARTIAL_FLOOR_MS = 25.0
# Generation 0 imports the third-party modules itself, before the base has them, so its workers
# share none of the base's copy. Once the base holds at least this much (MB), generation 0 is
# replaced by a generation forked from the base as soon as the server is idle.
REBASE_MIN_MB = 4.0
# A Django checkpoint is made this long (seconds) after the server became idle: the first requests
# to the new workers (a browser reloading the page the save changed) come first.
CHECKPOINT_DELAY = 0.2


class AppLoadError(Exception):
    """Generation 0 could not import the app; ``report`` has file, line, error and traceback."""

    def __init__(self, app: str, report: dict[str, Any]) -> None:
        where = report.get("file") or ""
        if where and report.get("line"):
            where = f"{where}:{report['line']}: "
        elif where:
            where += ": "
        super().__init__(f"cannot import the app {app}: {where}{report.get('error')}")
        self.report = report


def resolve_project(project: Project | str | os.PathLike[str]) -> Project:
    """Return the Project for a Project, a registered name, or a path to a definition file."""
    if isinstance(project, Project):
        return project
    text = os.fspath(project)
    if text.endswith(".py") or os.sep in text or os.path.isfile(text):
        return Project.from_file(text)
    return Project.find(text)


def module_names(project: Project, paths: Iterable[str]) -> list[str]:
    """Module names for source paths (other files keep their path relative to the root)."""
    root = Path(project.root)
    names = []
    for path in paths:
        try:
            rel = Path(path).relative_to(root)
        except ValueError:
            names.append(str(path))
            continue
        if rel.suffix != ".py":
            names.append(str(rel))
            continue
        parts = list(rel.with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


@dataclass
class ReloadRecord:
    """One reload: what changed, how it was done, timings (``server.last_reload``)."""

    number: int
    requested: float
    changed: set[str] = field(default_factory=set)
    full: bool = False
    plan: Plan | None = None
    strategy: str = ""  # what actually served: respawn, partial or fresh
    reason: str = ""
    modules: list[str] = field(default_factory=list)
    load_ms: float = 0.0  # the new generation's import (0 for a respawn)
    roll_ms: float = 0.0
    total_ms: float = 0.0
    generation: GenerationProcess | None = None
    snapshots: dict[str, changes.Snapshot | None] = field(default_factory=dict)
    tries: int = 1  # generations started over because files changed meanwhile
    partial_error: bool = False  # the partial reload raised (a fresh import decides whose fault)
    rebase: bool = False  # not a reload: generation 0 replaced by one from the warm base
    loaded: list[str] = field(default_factory=list)  # changed paths, for callers of the old API


class WorkerEnvironment:
    """Worker mixin: ``PREFORK_WORKER``, ``PREFORK_PORT`` and ``PREFORK_GENERATION`` in the environment.

    Set in the worker before it serves, so a page can show which worker and code generation answered.
    """

    def on_start(self) -> None:
        """In the worker, before it serves: publish its identity (worker)."""
        os.environ["PREFORK_WORKER"] = str(getattr(self, "index", ""))
        os.environ["PREFORK_PORT"] = str(getattr(self, "port", ""))
        os.environ["PREFORK_GENERATION"] = str(getattr(self, "generation", 0))
        super().on_start()  # type: ignore[misc]


class ProjectrServer(Generations, Server):
    """A Server whose reload() serves the project's current files as a fresh start would.

    ``project`` is a Project, a registered project name, or the path of a definition file; it
    says which files are watched and how they depend on each other. ``app`` is ``"module:attr"``.
    ``reload_timeout`` bounds the seconds a new generation's import may take. ``partial``:
    ``True``/``"auto"`` tries a partial reload where it is cheaper than a fresh import (measured),
    ``False``/``"never"`` never does (every code change imports the project afresh), ``"always"``
    tries one wherever the changed modules are loaded. ``trial`` is
    accepted for compatibility and ignored: every new generation is its own trial.
    """

    def __init__(
        self,
        project: Project | str | os.PathLike[str],
        app: Any,
        reload_timeout: float = 5.0,
        trial: bool = True,
        partial: bool | str = True,
        **kwargs: Any,
    ) -> None:
        kwargs["worker_mixins"] = (WorkerEnvironment, *kwargs.get("worker_mixins", ()))
        super().__init__(app=app, **kwargs)
        if not isinstance(app, str):
            spec = f"{getattr(app, '__module__', '')}:{getattr(app, '__qualname__', '')}"
            self.app_spec = spec
        self.project = resolve_project(project)
        watch_tree(self.project)
        self.reload_timeout = reload_timeout
        if partial not in (True, False, "auto", "always", "never"):
            raise ValueError(f"partial must be True/'auto', False/'never' or 'always', not {partial!r}")
        self.partial = partial if isinstance(partial, str) else "auto" if partial else "never"
        self.reload_count = 0
        self.last_reload: ReloadRecord | None = None
        self.strategy_counts = {"respawn": 0, "partial": 0, "fresh": 0}
        self._current: ReloadRecord | None = None
        self._again = False  # a reload was asked for while one ran
        self._again_full = False
        self._again_changes = False  # files changed while one ran
        self._unserved: set[str] = set()
        self._refused: set[str] = set()
        self._preload: list[str] = []
        self._files: dict[str, changes.Snapshot | None] = {}  # what the serving generation was made from
        self._base = None
        self._generations: dict[int, GenerationProcess] = {}
        self._serving: GenerationProcess | None = None
        self._generation_numbers = itertools.count(0)
        self._costs: dict[str, float] = {}  # own work of a fresh and of a partial generation (ms)
        self._measured: set[str] = set()  # ... of which these were measured, not estimated
        self._checkpoint = None
        self._checkpointable = False  # the serving generation has a set-up state to keep (Django)
        self._checkpoint_builder: GenerationProcess | None = None  # making one while the server is idle
        self._checkpoint_timer: Any = None  # ... or about to
        self._cold = True  # the serving generation descends from generation 0 (see REBASE_MIN_MB)
        self._rebase_wanted = False
        self._graph_built = False  # the dependency graph, once the app serves (_build_graph)

    # -- start (master) ---------------------------------------------------------------------------

    def load_app(self) -> Any:
        """The master does not import the app: generation 0 does, in ``_prepare_app``."""
        if not forks.supported():
            raise RuntimeError("ProjectrServer needs Linux (PR_SET_CHILD_SUBREAPER)")
        return None

    def _prepare_app(self) -> None:
        """Fork the base, then generation 0, and wait (turning the loop) until it reports (master).

        Raises AppLoadError when the app cannot be imported: nothing serves yet to fall back on.
        """
        forks.become_subreaper()
        self._files = _snapshots(self._project_files())
        self._start_base()
        outcome: dict[str, Any] = {}
        # With a second CPU, the base imports what generation 0 learns while generation 0 goes on
        # (a stream of "learned" batches): both finish at about the same time. On one CPU the two
        # would share it, and the app would be served later: the base preloads afterwards.
        stream = len(os.sched_getaffinity(0)) > 1
        gen = self._request_generation(
            "fresh", {"learn": True, "stream": stream}, lambda g, report: outcome.update(report)
        )
        self._cancel_timers(gen)
        gen.timers.append(self.call_later(STARTUP_TIMEOUT, lambda: self._generation_overdue(gen)))
        while not outcome and self.state == "new":
            self._turn()
        if self.state == "stopping":
            self._retire_generation(gen)
            raise KeyboardInterrupt("stopped while generation 0 imported the app")
        if outcome.get("event") != "ready":
            self._retire_generation(gen)
            raise AppLoadError(str(self.app_spec), outcome or {"error": "the server was stopped"})
        self._serving = self._spawn_from = gen
        if self._unserved:
            self.post_event("changed")  # saved while generation 0 imported
        self._preload = list(outcome.get("preload", ()))
        self._checkpointable = bool(outcome.get("checkpointable"))
        self._preload_base(self._preload)  # what its "learned" batches did not send yet
        if not self._preload:  # nothing third-party to keep warm: generation 0's import is the cost
            self._costs["fresh"] = float(outcome.get("ms", 0.0))
        logging.getLogger("prefork").info(
            "generation %d imported the app in %.0f ms", gen.number, outcome.get("ms", 0.0)
        )

    # -- the watcher (master) ----------------------------------------------------------------------

    def watch(self, watcher: Any) -> Any:
        """Reload whenever ``watcher.changed_files()`` reports a change; return the watcher."""
        self.add_io_handler(watcher, self._on_watcher_readable)
        return watcher

    def _on_watcher_readable(self, watcher: Any) -> None:
        changed = watcher.changed_files()
        if changed:
            self.note_changes(changed)
            self.post_event("changed")

    def handle_changed(self) -> None:
        """The watcher saw changes: reload, unless they are only the app's own output (master).

        Decided here, not when the watcher fires, because the files a generation wrote are known
        only once it has reported (a write during generation 0's import is seen before that).
        """
        if self._serving is None:
            return  # generation 0 is still importing: _prepare_app looks again when it is ready
        self._unserved -= self._serving.written
        if not self._unserved:
            self._when_idle()  # the base may have preloaded while these were not sorted out yet
            return
        self._abort_rebase()
        self._abort_checkpoint()
        if self._current is not None and not self._supersede(self._current):
            self._again_changes = True  # looked at again when this reload ends
            return
        if self._current is None:
            self.handle_reload()

    def note_changes(self, paths: Iterable[str]) -> None:
        """Record changed files: the next reload serves them (master)."""
        for path in paths:
            path = os.path.abspath(path)
            self._unserved.add(path)
            if (
                path.endswith(".py")
                and path not in self.project.modules
                and os.path.exists(path)
                and is_project_file(path, self.project.root)
            ):
                declare_file(self.project, path)  # a new module: watched from now on
            _drop_bytecode(path)

    def _project_files(self) -> list[str]:
        files: list[str] = self.project.source_files + self.project.resource_files
        if self.project.definition_file:
            files.append(self.project.definition_file)
        return files

    def _changed_files(self) -> set[str]:
        """Files that differ from what the serving generation was made from (a stat each) (master)."""
        known = self._files
        found = {
            path
            for path in known
            if changes.check(path, known[path])[0] and not (known[path] is None and not os.path.exists(path))
        }
        found |= {path for path in self._project_files() if path not in known}
        return found - (self._serving.written if self._serving is not None else set())

    # -- reloads (master) -----------------------------------------------------------------------------

    @property
    def reloading(self) -> bool:
        """True while a reload (new generation or roll) is in progress."""
        return self._current is not None

    def reload(self, full: bool = False) -> None:
        """Ask for a reload; ``full=True`` also rebuilds the base (new third-party imports)."""
        self.post_event("reload_full" if full else "reload")

    def handle_reload_full(self) -> None:
        """USR2 / ``prefork ctl reload --full``: a new base, then a fresh generation (master)."""
        self.handle_reload(full=True)

    def handle_reload(self, full: bool = False) -> None:
        """Plan and start a reload, or note one more after the running one (master)."""
        self._abort_rebase()
        self._abort_checkpoint()
        if self._current is not None:
            if not self._supersede(self._current):
                self._again = True
                self._again_full = self._again_full or full
            return
        self.reload_count += 1
        # A signal, `prefork ctl reload` or a watcher handler of the user's says no file names: look.
        changed = set(self._unserved) or self._changed_files()
        record = ReloadRecord(self.reload_count, time.perf_counter(), changed, full)
        record.snapshots = _snapshots(changed)
        for path in changed:
            _drop_bytecode(path)
        self._current = record
        notify("RELOADING=1")
        self._call_hook("on_reload")
        try:
            self._begin(record)
        except LoadError as exc:  # the definition file is broken: say where
            self._failed(record, describe_load_error(exc))
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the reload running for ever
            log.exception("reload #%d could not start", record.number)
            self._failed(record, {"error": f"{type(exc).__name__}: {exc}"})

    def _supersede(self, record: ReloadRecord) -> bool:
        """Files changed while a new generation imports: kill it and start over with every change.

        Its verdict would be stale anyway; and the save that fixes an endless loop at import
        must not wait for ``reload_timeout``. Not once workers are being replaced. (master)
        """
        booting = [g for g in self._generations.values() if g.state == "booting"]
        if not booting or record.tries >= _MAX_TRIES:
            return False
        now = self._unserved | self._changed_files()
        moved = {path for path in now if path not in record.snapshots or changes.check(path, record.snapshots[path])[0]}
        if not moved:
            return False
        for gen in booting:
            self._retire_generation(gen)
        record.tries += 1
        record.changed |= moved
        record.snapshots.update(_snapshots(moved))
        log.debug(
            "reload #%d: files changed while generation %s imported; starting over",
            record.number,
            ", ".join(str(g.number) for g in booting),
        )
        self._guarded(lambda: self._begin(record), f"reload #{record.number}")
        return True

    def _begin(self, record: ReloadRecord) -> None:
        serving = self._serving
        if serving is not None:
            record.changed -= serving.written  # the app's own output, not an edit
        if self.project.definition_file in record.changed:
            self.project._reread_definition_if_changed()  # a LoadError fails this reload
            watch_tree(self.project)
        if record.full:
            self._stop_base()
            self._start_base()
            self._preload_base(self._preload)
        if serving is None:
            plan = Plan("fresh", "no generation is serving")
        else:
            # The graph's edges come from each file's imports: an edit may have added or dropped some.
            self.project.rescan(path for path in record.changed if path.endswith(".py"))
            existed = {path for path, snap in self._files.items() if snap is not None}  # at the serving start
            plan = plan_reload(
                record.changed,
                sources=existed,
                loaded=serving.loaded,
                opened=serving.opened,
                affected=self.project.affected,
                refused=self._refused,
                root=self.project.root,
                definition_file=self.project.definition_file,
                full=record.full,
                foreign=serving.foreign,
                checkpoint=self._checkpoint.files if self._checkpoint is not None else None,
            )
            if plan.kind == "partial" and self.partial == "never":
                plan = Plan("fresh", "partial reloads are off")
            elif plan.kind == "partial" and self.partial == "auto" and self._fresh_is_cheaper():
                partial_ms = self._costs.get("partial", _PARTIAL_FLOOR_MS)
                plan = Plan(
                    "fresh",
                    f"importing the project afresh takes {self._costs['fresh']:.0f} ms here, "
                    f"a checked partial reload {partial_ms:.0f} ms",
                )
        record.plan, record.reason = plan, plan.reason
        log.debug("reload #%d: %s (%s)", record.number, plan.kind, plan.reason or "affected modules loaded")
        if plan.kind != "fresh":
            self._pause_base()  # a save during the base's preload: this reload gets the CPU
        if plan.kind == "respawn" and plan.modules and serving is not None:
            # First the probe, then the new workers: a successor accepts connections as soon as it
            # is up, so it must not start before the changed modules are known to import.
            record.strategy = "respawn"
            names = module_names(self.project, plan.modules)
            self._request_generation(
                "partial", {"probe": names}, lambda gen, report: self._probe_reported(record, gen, report)
            )
        elif plan.kind == "respawn":
            record.strategy = "respawn"
            self._roll_from(record, serving)
        elif plan.kind == "resume":
            self._request_generation(
                "fresh",
                {"resume": True},
                lambda gen, report: self._fresh_reported(record, gen, report),
                checkpoint=self._checkpoint,
            )
        elif plan.kind == "partial":
            units = [
                [name, path, os.path.basename(path) == "__init__.py"]
                for name, path in zip(module_names(self.project, plan.modules), plan.modules, strict=True)
            ]
            self._request_generation(
                "partial", {"units": units}, lambda gen, report: self._partial_reported(record, gen, report)
            )
        else:
            self._fresh(record)

    def _base_preloaded(self, ms: float, mb: float) -> None:
        """First estimate of a fresh generation's import: generation 0's cold import minus what the
        base now holds warm (a fresh reload measures it for real); replace generation 0 if its
        private copy of the base's imports is worth it."""
        if self._serving is not None and "fresh" not in self._costs:
            cold = float(self._serving.report.get("ms", 0.0))
            self._costs["fresh"] = max(cold - ms, 1.0)
        if mb >= REBASE_MIN_MB and self._cold:
            self._rebase_wanted = True
            self._when_idle()

    def _when_idle(self) -> None:
        """What the master does once nothing is reloading: replace generation 0, keep a checkpoint."""
        self._maybe_rebase()
        self._maybe_checkpoint()

    def _idle(self) -> bool:
        """Running, the first workers announced, nothing reloading, rolling or waiting to be served
        (master). A file changed but not reported yet is not seen here (``_changed_files``)."""
        return (
            self.state == "running"
            and self._announced  # generation 0's workers first: they serve meanwhile
            and self._serving is not None
            and self._current is None
            and self._roll is None
            and not self._unserved
        )

    def _maybe_rebase(self) -> None:
        """When idle, roll onto a fresh generation from the warm base, so that the workers share
        its third-party modules instead of generation 0's private copy (master).

        Not a reload: nothing changed, no reload number, no hooks; a change or a reload asked for
        meanwhile takes precedence (``_abort_rebase``).
        """
        serving = self._serving
        if serving is None or not (self._rebase_wanted and self._cold and self._idle()) or self._changed_files():
            return  # a change first (the watcher reports it): that reload ends idle again
        self._rebase_wanted = False
        record = ReloadRecord(0, time.perf_counter(), rebase=True)
        record.plan = Plan("fresh", "generation 0 imported the third-party modules before the base")
        record.reason = record.plan.reason
        self._current = record
        log.debug("replacing generation %d by a generation from the warm base", serving.number)
        self._fresh(record)

    def _maybe_announce(self) -> None:
        """Once every slot first has a ready worker: announce, then replace generation 0 if the base
        preloaded meanwhile (master)."""
        super()._maybe_announce()
        self._maybe_rebase()
        if self._announced and not self._graph_built:
            self._build_graph()
        self._maybe_checkpoint()

    def _build_graph(self) -> None:
        """Build the project's dependency graph now that the app serves, not at the first save (master).

        It reads every project file's imports (10 ms for 50 files, 75 ms for 1000); each reload
        then only rescans the files it changed. A failure is left for the first reload to report.
        """
        self._graph_built = True
        try:
            self.project.affected(())
        except Exception:  # noqa: BLE001 - the first reload builds it again and reports what went wrong
            log.debug("the dependency graph could not be built yet", exc_info=True)

    def _abort_rebase(self) -> None:
        """A change or a reload comes first: drop a rebase whose generation is still importing (master).

        Tried again when the server is idle. Once its workers are rolling, it finishes.
        """
        record = self._current
        booting = [g for g in self._generations.values() if g.state == "booting"]
        if record is None or not record.rebase or not booting:
            return
        for gen in booting:
            self._retire_generation(gen)
        self._current = None
        self._rebase_wanted = True

    def _maybe_checkpoint(self) -> None:
        """When idle, have a generation from the base leave a checkpoint of a Django app as set up,
        for the next view or URLconf save to resume from (master).

        Made here, off the save-to-served path, rather than by each fresh generation on its way to
        serving; and CHECKPOINT_DELAY after the server became idle, so that it does not take a
        CPU from the new workers' first requests. Only with the base's third-party modules warm
        (the checkpoint shares them).
        """
        if self._checkpoint_timer is None and self._checkpoint_wanted():
            self._checkpoint_timer = self.call_later(CHECKPOINT_DELAY, self._make_checkpoint)

    def _checkpoint_wanted(self) -> bool:
        """True when a checkpoint should be made: a Django app serves, none is kept or being made,
        the server is idle and the base warm (master)."""
        base, builder = self._base, self._checkpoint_builder
        return (
            self._checkpointable
            and self._checkpoint is None
            and not (builder is not None and builder.state == "booting")
            and self._idle()
            and base is not None
            and base.preloaded
        )

    def _make_checkpoint(self) -> None:
        """CHECKPOINT_DELAY later: ask the base for the checkpoint's generation if still wanted (master)."""
        self._checkpoint_timer = None
        serving = self._serving
        if serving is None or not self._checkpoint_wanted() or self._changed_files():
            return  # a change first (the watcher reports it): that reload ends idle again
        log.debug("a checkpoint of generation %d's set-up state is being made", serving.number)
        self._checkpoint_builder = self._request_generation("fresh", {"checkpoint": True}, self._checkpoint_made)

    def _checkpoint_made(self, gen: GenerationProcess, report: dict[str, Any]) -> None:
        """The checkpoint's generation reported: keep the checkpoint, unless a file changed meanwhile
        (it may hold the old version) (master)."""
        self._checkpoint_builder = None
        checkpoint = gen.checkpoint
        serving = self._serving
        fresh = self._idle() and not self._changed_files()
        if report.get("event") == "ready" and checkpoint is not None and serving is not None and fresh:
            self._checkpoint = serving.checkpoint = checkpoint  # serving's: it goes when serving does
        elif report.get("event") != "ready":
            log.debug("no checkpoint: %s", report.get("reason") or report.get("error"))
        self._retire_generation(gen)  # and its checkpoint, unless kept

    def _abort_checkpoint(self) -> None:
        """A change or a reload comes first: drop a checkpoint still being made (master)."""
        builder, self._checkpoint_builder = self._checkpoint_builder, None
        self._retire_generation(builder)

    def _fresh_is_cheaper(self) -> bool:
        """True once measured: a fresh generation's import costs less than a partial reload's checks.

        Both are correct; on a small project the checks of a partial reload (a pass over every module
        of the process) take longer than importing the project again.
        """
        fresh, partial = self._costs.get("fresh"), self._costs.get("partial", _PARTIAL_FLOOR_MS)
        return fresh is not None and fresh < partial

    def _learn_cost(self, kind: str, ms: float) -> None:
        """Remember what a generation's own work cost (a moving average; the first measurement
        replaces an estimate)."""
        old = self._costs.get(kind) if kind in self._measured else None
        self._costs[kind] = ms if old is None else (old + ms) / 2
        self._measured.add(kind)

    def _rolls_onto_the_same_code(self) -> bool:
        """The roll onto the warm base (generation 0 replaced) serves the same code (master)."""
        return self._current is not None and self._current.rebase

    def _fresh(self, record: ReloadRecord) -> None:
        self._request_generation("fresh", {}, lambda gen, report: self._fresh_reported(record, gen, report))

    def _probe_reported(self, record: ReloadRecord, gen: GenerationProcess, report: dict[str, Any]) -> None:
        """The workers' first-request imports were tried in a throwaway copy: let the roll end, or fail it."""
        self._retire_generation(gen)
        if self._current is not record:
            return  # the server is stopping: the reload was dropped
        if report.get("event") != "ready":
            self._failed(record, report)
            return
        self._roll_from(record, self._serving)

    def _partial_reported(self, record: ReloadRecord, gen: GenerationProcess, report: dict[str, Any]) -> None:
        if report.get("event") == "ready":
            record.strategy, record.modules = "partial", list(report.get("modules", ()))
            record.load_ms = float(report.get("ms", 0.0))
            self._learn_cost("partial", record.load_ms)
            self._roll_from(record, gen)
            return
        self._retire_generation(gen)
        if report.get("event") == "failed":  # it died or hung: a fresh import would do the same
            self._failed(record, report)
            return
        record.reason = f"partial refused: {report.get('reason')}"
        record.partial_error = bool(report.get("error"))
        if not record.partial_error:  # unsafe by construction: do not try again for these files
            self._refused.update(p for p in record.changed if p.endswith(".py"))
        log.debug("reload #%d: %s; importing afresh", record.number, record.reason)
        self._fresh(record)

    def _fresh_reported(self, record: ReloadRecord, gen: GenerationProcess, report: dict[str, Any]) -> None:
        if record.rebase and report.get("event") == "ready" and self._changed_files():
            # Saved while it imported: its workers could import the new files at their first request
            # next to code from the old ones. The reload of that save comes first; a rebase follows.
            self._retire_generation(gen)
            self._rebase_wanted = True
            self._finish()
            return
        if report.get("event") != "ready":
            self._retire_generation(gen)
            self._failed(record, report)
            return
        record.strategy, record.load_ms = "fresh", float(report.get("ms", 0.0))
        self._checkpointable = bool(report.get("checkpointable"))
        if gen.checkpoint is None or gen.checkpoint.owner == gen.number:  # not resumed: the whole import
            self._learn_cost("fresh", record.load_ms)
        if record.partial_error:  # the partial reload raised where a fresh import did not: for good
            self._refused.update(p for p in record.changed if p.endswith(".py"))
        self._roll_from(record, gen)

    def _roll_from(self, record: ReloadRecord, gen: GenerationProcess | None) -> None:
        """Replace every worker with one forked by ``gen`` (master)."""
        record.generation = gen
        if self._current is not record or self.state != "running":
            if gen is not self._serving:
                self._retire_generation(gen)
            self._current = None
            self._resume_base()
            return
        self._spawn_from = gen
        if not self.roll_workers():
            self._spawn_from = self._serving
            if gen is not self._serving:
                self._retire_generation(gen)
            self._current = None
            self._resume_base()

    def roll_finished(self, ok: bool, info: dict[str, Any]) -> None:
        """Server's report that a roll ended: commit the generation, or drop it (master)."""
        record = self._current
        if record is None:
            super().roll_finished(ok, info)
            self._when_idle()
            return
        gen = record.generation
        if ok:
            if record.strategy == "fresh":
                self._cold = False  # every fresh generation but 0 is forked from the warm base
            old, self._serving = self._serving, gen
            self._spawn_from = gen
            if gen is not None and gen.checkpoint is not self._checkpoint:
                # Its own checkpoint, or none (a partial generation: the checkpoint's files may have changed)
                old_checkpoint, self._checkpoint = self._checkpoint, gen.checkpoint
                self._retire_checkpoint(old_checkpoint)
            if old is not gen:
                self._retire_generation(old)
            # A file saved again after its snapshot (during the import or the roll) stays unserved:
            # the watcher's event for that save may have come before this roll ended.
            again = {path for path in record.changed if _saved_since(path, record.snapshots.get(path))}
            self._unserved -= record.changed - again
            self._files.update(record.snapshots)
            self._succeeded(record, info)
            return
        self._spawn_from = self._serving
        if gen is not self._serving:
            self._retire_generation(gen)
        if self.state != "running":
            log.info("reload #%d abandoned: the server is stopping", record.number)
            self._current = None
            self._resume_base()
        else:
            self._failed(record, {"error": f"the new workers did not start: {info.get('reason')}"})

    def _succeeded(self, record: ReloadRecord, info: dict[str, Any]) -> None:
        """Log the reload's one line and finish it (master)."""
        record.roll_ms = float(info.get("elapsed", 0.0)) * 1000.0
        record.total_ms = (time.perf_counter() - record.requested) * 1000.0
        if record.rebase:
            log.info(
                "generation %d, forked from the warm base, replaced generation 0 in %.0f ms (%d workers): "
                "they share the base's third-party modules",
                record.generation.number if record.generation else -1,
                record.total_ms,
                int(info.get("replaced", len(self.workers))),
            )
            self._finish()
            return
        record.loaded = sorted(record.changed)
        self.strategy_counts[record.strategy] += 1
        replaced = int(info.get("replaced", len(self.workers)))
        log.info(
            "reload #%d: %s in %.0f ms; %d worker%s replaced (generation %d)",
            record.number,
            self._describe(record),
            record.total_ms,
            replaced,
            "s" if replaced != 1 else "",
            info.get("generation", self.generation),
        )
        self.last_reload = record
        notify("READY=1")
        self._finish()

    def _describe(self, record: ReloadRecord) -> str:
        """``2 modules (a, b)``, ``fresh generation (why)`` or ``workers respawned (why)``."""
        if record.strategy == "partial":
            count = len(record.modules)
            return f"{count} module{'s' if count != 1 else ''} ({', '.join(record.modules)})"
        changed = ", ".join(module_names(self.project, sorted(record.changed))[:3])
        why = record.reason or (f"{changed} changed" if changed else "requested")
        if record.strategy == "respawn":
            return f"workers respawned ({changed}: {why})" if changed else f"workers respawned ({why})"
        return f"fresh generation ({why})"

    def _failed(self, record: ReloadRecord, report: dict[str, Any]) -> None:
        """Log one readable block for a failed reload; the old workers keep serving (master)."""
        if record.rebase:  # the same files as generation 0: a failure here is an accident of the moment
            log.warning(
                "generation 0 was not replaced by a generation from the warm base: %s; it serves on",
                report.get("error"),
            )
            self._finish()
            return
        where = report.get("file") or "?"
        if report.get("line"):
            where = f"{where}:{report['line']}"
        lines = [f"reload #{record.number} failed: {where}: {report.get('error')}"]
        lines += ["  " + ln for ln in (report.get("traceback") or "").rstrip().splitlines()]
        lines.append(
            f"  still serving generation {self.generation}; the changes stay pending: save a fix to retry them all"
        )
        log.error("\n".join(lines))
        self._call_hook("reload_failed", report)
        notify("READY=1")
        self._finish()

    def _finish(self) -> None:
        """Leave the reloading state; run the coalesced reload if one was asked for (master)."""
        self._current = None
        self._resume_base()
        changes, self._again_changes = self._again_changes, False
        if self._again:
            full, self._again, self._again_full = self._again_full, False, False
            if not getattr(self, "_reload_again", False):
                self.post_event("reload_full" if full else "reload")
        elif changes:
            self.post_event("changed")
        else:
            self._when_idle()

    def reload_failed(self, report: dict[str, Any]) -> None:
        """Master hook: a reload failed; ``report`` has ``file``, ``line``, ``error``, ``traceback``.

        The old workers keep serving. (``prefork.livereload`` shows it in the browser.)
        """

    # -- stop (master) ----------------------------------------------------------------------------

    def handle_stop(self, graceful: bool = True) -> None:
        """Stop: a generation still importing is killed, its reload dropped (master)."""
        record = self._current
        if record is not None and self.state == "running":
            for gen in list(self._generations.values()):
                if gen.state == "booting":
                    self._retire_generation(gen)  # first: it learns the pid if the generation sent it
                    if not record.rebase:
                        log.info(
                            "reload #%d abandoned: the server is stopping (generation %s killed)",
                            record.number,
                            f"pid {gen.pid}" if gen.pid is not None else "before it reported its pid",
                        )
            self._again = False
        super().handle_stop(graceful)

    def _cleanup(self) -> None:
        """Stop the base and every generation, then what Server cleans up (master)."""
        for gen in list(self._generations.values()):
            self._retire_checkpoint(gen.checkpoint)
            self._kill_generation(gen)
            self._unregister_channel(gen)
        self._retire_checkpoint(self._checkpoint)
        self._stop_base()
        super()._cleanup()


def _snapshots(paths: Iterable[str]) -> dict[str, changes.Snapshot | None]:
    """What each file holds now (None: it does not exist) (master)."""
    taken: dict[str, changes.Snapshot | None] = {}
    for path in paths:
        try:
            taken[path] = changes.read(path)[1]
        except OSError:
            taken[path] = None
    return taken


def _saved_since(path: str, snap: changes.Snapshot | None) -> bool:
    """True when ``path`` no longer holds what ``snap`` recorded (None: it did not exist) (master)."""
    if snap is None:
        return os.path.exists(path)
    return changes.check(path, snap)[0]


def _drop_bytecode(path: str) -> None:
    """Remove a changed file's cached bytecode: its key (mtime seconds + size) may not see the edit."""
    if path.endswith(".py"):
        try:
            os.unlink(importlib.util.cache_from_source(path))
        except (OSError, ValueError, NotImplementedError):
            pass
