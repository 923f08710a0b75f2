"""What a project has loaded, what changed since, and the graph those answers come from."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import changes
from .errors import LoadError
from .graph import RUNTIME, DependencyGraph
from .imports import imported_names
from .loader import Unit, execute
from .runtime import Observed, Scope

if TYPE_CHECKING:
    from .project import FileSpec, Project

log = logging.getLogger("projectr.load")


@dataclass
class Tracker:
    """Per-project load state: snapshots of the last successful load, import scans, the graph.

    Snapshots are recorded only when a load succeeds, so failed files stay pending.
    """

    snapshots: dict[str, changes.Snapshot] = field(default_factory=dict)
    resources: dict[str, changes.Snapshot] = field(default_factory=dict)
    scans: dict[str, tuple[bytes, frozenset[str]]] = field(default_factory=dict)
    runtime: dict[str, frozenset[str]] = field(default_factory=dict)  # path -> modules its last run imported
    loaded: bool = False
    checked: int = 0  # files stat-checked by the last load() (diagnostics, tests, benchmarks)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # the last load's (module, warning)
    _unloaded: set[str] = field(default_factory=set)
    _complete_version: int = -1
    _graph: DependencyGraph | None = None
    _graph_key: object = None
    _dirty: bool = True
    _by_module: dict[str, str] = field(default_factory=dict)
    _scope: Scope | None = None
    _edits: list[tuple[str, set[str], set[str]]] = field(default_factory=list)  # this load's graph edits
    _unrecorded: bool = False  # this load's reading changed the graph in a way _edits cannot undo
    _scan_undo: list[tuple[str, tuple[bytes, frozenset[str]] | None]] = field(default_factory=list)

    def graph(self, project: Project) -> DependencyGraph:
        """Return the current graph, rebuilding it only if the declarations changed or an edit
        added an import that the precomputed order cannot absorb."""
        key = project._version
        if self._graph is None or self._dirty or self._graph_key != key:
            specs = project._specs()
            self._graph = _build_graph(specs, self._scan_all(specs), self.runtime)
            self._by_module = {s.module: s.path for s in specs}
            self._scope = Scope.of(self._by_module)
            self._graph_key, self._dirty = key, False
        return self._graph

    def load(self, project: Project, force: bool) -> list[str]:
        """Reload what changed (everything if forced or first) as one transaction; return the paths."""
        specs = project._by_path
        full = force or not self.loaded
        self.warnings = []
        hints = project._hints_begin()
        try:
            return self._load(project, specs, full, self._candidates(project, hints))
        except BaseException:
            for watcher, taken in hints:
                watcher.load_hints_abort(taken)
            raise

    def _load(self, project: Project, specs: dict[str, FileSpec], full: bool, candidates: set[str] | None) -> list[str]:
        if full:
            changed = list(specs)
        elif candidates is not None:  # a watcher vouches for every other file
            changed = [p for p in candidates if p in specs and self._changed(p)]
        else:
            changed = [p for p in specs if self._changed(p)]
        self.checked = len(specs) if full or candidates is None else len(candidates)
        resources = self._changed_resources(project, full)
        if not changed:
            self._commit_resources(resources)
            self.loaded = True
            return [path for path, _ in resources]
        importlib.invalidate_caches()  # new files next to project files must be importable
        self._edits, self._scan_undo, self._unrecorded = [], [], False
        observed = Observed(warnings=self.warnings)  # kept even if the load fails
        try:
            contents = self._plan(project, changed, full)
            order = list(contents)
            execute(
                [Unit(p, specs[p].module, specs[p].is_package, contents[p][0]) for p in order], self._scope, observed
            )
        except BaseException:
            # the graph must describe what is loaded: a bad edit's imports are forgotten with it
            for path, cached in reversed(self._scan_undo):
                if cached is None:
                    self.scans.pop(path, None)
                else:
                    self.scans[path] = cached
            self._undo_graph_edits()
            raise
        for path in order:
            self.snapshots[path] = contents[path][1]
        self._record_runtime(project, order, observed)
        self._commit_resources(resources)
        self.loaded = True
        log.debug("loaded %d file(s): %s", len(order), order)
        return order + [path for path, _ in resources]

    def rescan(self, project: Project, paths: Iterable[str]) -> None:
        """Re-read the imports of `paths` from disk (without loading), so the graph follows edits."""
        for path in paths:
            if path in project._by_path:
                try:
                    self._rescan(project, path, *changes.read(path))
                except OSError:
                    continue
        self._edits, self._scan_undo, self._unrecorded = [], [], False  # nothing to undo outside a load

    def _candidates(self, project: Project, hints: Sequence[tuple[object, set[str] | None]]) -> set[str] | None:
        """Files load() must check: what a vouching watcher saw plus files never loaded; None: all."""
        vouched = [taken for _, taken in hints if taken is not None]
        if not vouched:
            return None
        if self._complete_version != project._version:  # declarations changed: find new files once
            self._unloaded = {p for p in project._by_path if p not in self.snapshots}
            self._complete_version = project._version
        self._unloaded = {p for p in self._unloaded if p not in self.snapshots}
        return vouched[0] | self._unloaded

    def _changed(self, path: str) -> bool:
        """Check one file against its snapshot, refreshing the snapshot when unchanged."""
        changed, fresh = changes.check(path, self.snapshots.get(path))
        if fresh is not None:
            self.snapshots[path] = fresh
        return changed

    def _plan(self, project: Project, changed: list[str], full: bool) -> dict[str, tuple[bytes, changes.Snapshot]]:
        """Read the changed files and their dependents; return contents in load order.

        Reading may reveal new imports, which may add dependents: repeat until stable.
        """
        contents: dict[str, tuple[bytes, changes.Snapshot]] = {}
        todo = changed
        while True:
            for path in todo:
                try:
                    contents[path] = changes.read(path)
                except OSError as exc:
                    raise LoadError(path, exc) from exc
                self._rescan(project, path, *contents[path])
            graph = self.graph(project)
            order = graph.order if full else graph.affected(changed)
            todo = [p for p in order if p not in contents]
            if not todo:
                return {p: contents[p] for p in order}

    def _rescan(self, project: Project, path: str, data: bytes, snap: changes.Snapshot) -> None:
        """Update the import scan of a file read for loading; mark the graph dirty if edges moved."""
        cached = self.scans.get(path)
        if cached is not None and cached[0] == snap.digest:
            return
        spec = project._spec(path)
        names = frozenset(imported_names(data, spec.module, spec.is_package))
        self._scan_undo.append((path, cached))
        self.scans[path] = (snap.digest, names)
        if cached is None or cached[1] == names:
            if cached is None:  # never scanned: the graph is rebuilt with it, which _edits cannot undo
                self._dirty = self._unrecorded = True
            return
        if self._graph is None or self._dirty or self._graph_key != project._version:
            self._dirty = self._unrecorded = True  # the rebuild will read this scan: undo = rebuild again
            return
        old = {self._by_module[n] for n in cached[1] if n in self._by_module}
        new = {self._by_module[n] for n in names if n in self._by_module}
        if old != new:
            self._edits.append((path, old, new))
            if not self._graph.replace_imports(path, old, new):
                self._dirty = True  # a backward edge: recompute the order

    def _record_runtime(self, project: Project, order: list[str], observed: Observed) -> None:
        """Keep what each executed file imported while it ran, and move its runtime edges to match."""
        for path in order:
            new = frozenset(observed.imports.get(path, ()))
            old = self.runtime.get(path, frozenset())
            if new == old:
                continue
            self.runtime[path] = new
            if self._graph is None or self._dirty or self._graph_key != project._version:
                self._dirty = True  # the rebuild reads self.runtime
                continue
            by_module = self._by_module
            if not self._graph.replace_imports(
                path,
                {by_module[n] for n in old if n in by_module},
                {by_module[n] for n in new if n in by_module},
                RUNTIME,
            ):
                self._dirty = True  # a backward edge: recompute the order

    def _undo_graph_edits(self) -> None:
        """Put back the import edges a failed load's reading changed (the scans are already back)."""
        for path, old, new in reversed(self._edits):
            if self._graph is not None and not self._graph.replace_imports(path, new, old):
                self._dirty = True
        if self._unrecorded:
            self._dirty = True  # a graph built from the failed scans: build it again from the restored ones
        self._edits, self._unrecorded = [], False

    def _scan_all(self, specs: list[FileSpec]) -> dict[str, frozenset[str]]:
        """Import scans for every file, reading from disk those never scanned."""
        result: dict[str, frozenset[str]] = {}
        for spec in specs:
            if spec.path not in self.scans:
                try:
                    data, snap = changes.read(spec.path)
                except OSError:
                    result[spec.path] = frozenset()
                    continue
                names = frozenset(imported_names(data, spec.module, spec.is_package))
                self.scans[spec.path] = (snap.digest, names)
            result[spec.path] = self.scans[spec.path][1]
        return result

    def _changed_resources(self, project: Project, full: bool) -> list[tuple[str, changes.Snapshot | None]]:
        """Resource files whose content changed (or that appeared or vanished) since the last load."""
        current = project.resource_files
        out: list[tuple[str, changes.Snapshot | None]] = []
        for path in current + [p for p in self.resources if p not in set(current)]:
            old = self.resources.get(path)
            if not full:
                changed, fresh = changes.check(path, old)
                if not changed:
                    self.resources[path] = fresh or old  # type: ignore[assignment]
                    continue
            try:
                snap: changes.Snapshot | None = changes.read(path)[1]
            except OSError:
                snap = None
            if full or snap is None or old is None or snap.digest != old.digest:
                out.append((path, snap))
            elif snap is not None:
                self.resources[path] = snap  # touched, same content: not a change
        return out

    def _commit_resources(self, resources: Iterable[tuple[str, changes.Snapshot | None]]) -> None:
        """Record resource snapshots after a successful load."""
        for path, snap in resources:
            if snap is None:
                self.resources.pop(path, None)
            else:
                self.resources[path] = snap


def _build_graph(
    specs: list[FileSpec], scans: dict[str, frozenset[str]], runtime: dict[str, frozenset[str]]
) -> DependencyGraph:
    """Merge declared needs, scanned and run-time imports, and package-before-submodule order into one graph."""
    by_module = {s.module: s.path for s in specs}
    needs = [(need, s.path) for s in specs for need in s.needs]
    imports = [(by_module[name], s.path) for s in specs for name in scans.get(s.path, ()) if name in by_module]
    ran = [(by_module[name], s.path) for s in specs for name in runtime.get(s.path, ()) if name in by_module]
    packages = []
    for s in specs:
        parts = s.module.split(".")
        for i in range(1, len(parts)):
            parent = by_module.get(".".join(parts[:i]))
            if parent is not None:
                packages.append((parent, s.path))
    return DependencyGraph([s.path for s in specs], needs, imports, packages, ran)
