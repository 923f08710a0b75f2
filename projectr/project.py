"""The DSL: a Project lists its files (and their `needs`) and resources, and knows its definition file."""

from __future__ import annotations

import builtins
import contextlib
import glob
import logging
import os
import posixpath
import sys
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from . import changes
from .errors import LoadError, ProjectError
from .graph import needs_cycle
from .tracker import Tracker

if TYPE_CHECKING:
    import networkx as nx

    from .watch import BaseWatcher

log = logging.getLogger("projectr")

# The registry the DSL promises (Project["name"]); the capture stack lets from_file see what a file defined.
_REGISTRY: dict[str, Project] = {}
_CAPTURES: list[list[Project]] = []
_DEFINING: list[str] = []


@dataclass
class FileSpec:
    """One declared source file."""

    key: str  # path relative to root, posix, without ".py"
    path: str  # absolute path
    module: str  # dotted module name
    is_package: bool
    needs: list[str] = field(default_factory=list)  # absolute paths


class _Registry(type):
    """Lets `Project["name"]` look a project up."""

    def __getitem__(cls, name: str) -> Project:
        return cast("type[Project]", cls).find(name)


class Project(metaclass=_Registry):
    """A named set of source files with dependencies, loadable as a transaction and watchable."""

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        definition_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Declare and register a project; `root` defaults to the folder of the calling file."""
        self.name = name
        self.root = os.path.abspath(os.fspath(root) if root is not None else _caller_dir())
        if definition_file is None and _DEFINING:
            definition_file = _DEFINING[-1]
        self.definition_file: str | None = os.path.abspath(definition_file) if definition_file else None
        self._files: dict[str, FileSpec] = {}
        self._by_path: dict[str, FileSpec] = {}
        self._resource_patterns: list[str] = []
        self._cwd: list[str] = ["."]
        self._version = 0
        self._tracker = Tracker()
        self._definition_snapshot: changes.Snapshot | None = None
        self._watchers: weakref.WeakSet[BaseWatcher] = weakref.WeakSet()  # inotify ones spare load() the stats
        _REGISTRY[name] = self
        for capture in _CAPTURES:
            capture.append(self)

    def __repr__(self) -> str:
        return f"<Project {self.name!r} root={self.root!r} files={len(self._files)}>"

    # ---- registry -------------------------------------------------------------------------------

    @classmethod
    def find(cls, name_or_project: str | Project) -> Project:
        """Return the registered project of that name (a Project is returned as is)."""
        if isinstance(name_or_project, Project):
            return name_or_project
        try:
            return _REGISTRY[name_or_project]
        except KeyError:
            known = ", ".join(sorted(_REGISTRY)) or "none"
            raise KeyError(f"no project named {name_or_project!r}; known projects: {known}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Project:
        """Execute a definition file and return the project it defines (remembering the file)."""
        path = os.path.abspath(os.fspath(path))
        data, snap = changes.read(path)
        projects = _run_definition(path, data)
        if not projects:
            raise ProjectError(f"{path} defines no Project")
        project = projects[0]
        project.definition_file = path
        project._definition_snapshot = snap
        return project

    # ---- the DSL --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def directory(self, name: str) -> Iterator[str]:
        """Declare the files in the block relative to `name` (relative to the current directory)."""
        key = self._join(name)
        self._cwd.append(key)
        try:
            yield os.path.join(self.root, key)
        finally:
            self._cwd.pop()

    def file(self, name: str, needs: Iterable[str] = ()) -> str:
        """Declare a source file (`name` without .py, relative to the current directory); return its path.

        `needs` names files declared earlier (relative to the current directory, `..` allowed).
        Declaring a file again adds its new needs.
        """
        key = self._join(_strip_py(name))
        if isinstance(needs, str):
            needs = [needs]
        need_keys = [self._join(_strip_py(n)) for n in needs]
        for need in need_keys:
            if need == key:
                raise ProjectError(f"needs cycle: {key}.py -> {key}.py")
            if need not in self._files:
                raise ProjectError(
                    f"{key}.py needs {need}.py, which is not declared (declare it before the files that need it)"
                )
        existing = self._files.get(key)
        spec = existing or self._add(key)
        before = list(spec.needs)
        for need in need_keys:
            need_path = self._files[need].path
            if need_path not in spec.needs:
                spec.needs.append(need_path)
        try:
            if existing is not None:  # only a re-declaration can close a cycle: nothing needs a new file
                self._check_needs_cycle(spec)
        except ProjectError:
            spec.needs[:] = before
            raise
        self._version += 1
        return spec.path

    def resource(self, pattern: str) -> None:
        """Declare non-Python files (a glob relative to the current directory): watched, never executed."""
        self._resource_patterns.append(os.path.join(self.root, self._join(pattern)))
        self._version += 1

    # ---- what is declared -----------------------------------------------------------------------

    @property
    def source_files(self) -> list[str]:
        """Absolute paths of the declared source files, in declared order."""
        return [s.path for s in self._files.values()]

    @property
    def resource_files(self) -> list[str]:
        """Absolute paths of the files the resource globs match now (pattern order, then sorted)."""
        seen: dict[str, None] = {}
        for pattern in self._resource_patterns:
            for path in sorted(glob.glob(pattern)):
                if os.path.isfile(path):
                    seen.setdefault(path, None)
        return list(seen)

    @property
    def resource_patterns(self) -> list[str]:
        """The absolute glob patterns declared with `resource()`."""
        return list(self._resource_patterns)

    @property
    def modules(self) -> dict[str, str]:
        """Map each source file's absolute path to its module name."""
        return {s.path: s.module for s in self._files.values()}

    # ---- graph and loading ----------------------------------------------------------------------

    @property
    def graph(self) -> nx.DiGraph[str]:
        """The dependency graph: nodes are absolute paths, edge u -> v means v needs or imports u.

        Each edge has `kind` ("needs" if declared, else "import") and `kinds` (all its sources).
        """
        return self._tracker.graph(self).graph

    @property
    def load_order(self) -> list[str]:
        """Every source file in the order a full load runs them."""
        return list(self._tracker.graph(self).order)

    def affected(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Return, in load order, what a change to `paths` would reload (loads nothing)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return self._tracker.graph(self).affected(os.path.abspath(os.fspath(p)) for p in paths)

    def rescan(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Re-read the imports of `paths` from disk (loads nothing), so that `affected`, `graph` and
        `load_order` follow edits that a process which never loads the project has seen."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._tracker.rescan(self, [os.path.abspath(os.fspath(p)) for p in paths])

    def load(self, force: bool = False) -> list[str]:
        """Reload what changed since the last successful load, plus its dependents, as one transaction.

        Returns the absolute paths loaded in order, followed by resource files whose content
        changed; [] if nothing changed. Raises LoadError (modules left as they were) on failure.
        Warnings raised meanwhile are logged (WARNING, naming the module) and kept in
        `last_load_warnings`.
        """
        self._tracker.warnings = []
        self._reread_definition_if_changed()
        if self.root not in sys.path:
            sys.path.insert(0, self.root)
        try:
            return self._tracker.load(self, force)
        except LoadError as exc:
            log.warning("projectr %s: load failed: %s", self.name, exc)
            raise
        finally:
            for module, warning in self._tracker.warnings:
                log.warning("projectr %s: loading %s: %s", self.name, module, warning)

    @property
    def last_load_warnings(self) -> list[str]:
        """The warnings raised while the last load() executed modules (also if it failed), each as
        "file:line: Category: message"; [] if none. A reload that re-registers state (Django's
        "Model ... was already registered") shows up here instead of passing silently."""
        return [warning for _, warning in self._tracker.warnings]

    def watch_changes(self, backend: str = "auto", **options: Any) -> BaseWatcher:
        """Return a watcher (fileno(), changed_files(), close()) over this project's files."""
        from .watch import watch

        return watch(self, backend, **options)

    # ---- internals ------------------------------------------------------------------------------

    def _hints_begin(self) -> list[tuple[BaseWatcher, set[str] | None]]:
        """Ask every open watcher which files may have changed since the last load."""
        return [(w, w.load_hints_begin()) for w in list(self._watchers)]

    def _specs(self) -> list[FileSpec]:
        return list(self._files.values())

    def _spec(self, path: str) -> FileSpec:
        return self._by_path[path]

    def _join(self, name: str) -> str:
        key = posixpath.normpath(posixpath.join(self._cwd[-1], name.replace(os.sep, "/")))
        if key.startswith("../") or key == ".." or posixpath.isabs(key):
            raise ProjectError(f"{name!r} points outside the project root {self.root}")
        return key

    def _add(self, key: str) -> FileSpec:
        parts = key.split("/")
        is_package = parts[-1] == "__init__"
        module_parts = parts[:-1] if is_package else parts
        if not module_parts or not all(p.isidentifier() for p in module_parts):
            raise ProjectError(f"{key}.py cannot be a module (names must be identifiers below the root)")
        spec = FileSpec(key, os.path.join(self.root, *parts) + ".py", ".".join(module_parts), is_package)
        self._files[key] = spec
        self._by_path[spec.path] = spec
        return spec

    def _check_needs_cycle(self, spec: FileSpec) -> None:
        needs = {s.path: s.needs for s in self._files.values()}
        cycle = needs_cycle(needs, spec.path)
        if cycle:
            names = " -> ".join(os.path.relpath(p, self.root) for p in cycle)
            raise ProjectError(f"needs cycle: {names}")

    def _reread_definition_if_changed(self) -> None:
        """Re-run the definition file when it changed, adopting its declarations (load state is kept)."""
        path = self.definition_file
        if path is None:
            return
        changed, fresh = changes.check(path, self._definition_snapshot)
        if not changed:
            self._definition_snapshot = fresh
            return
        try:
            data, snap = changes.read(path)
        except OSError as exc:
            raise LoadError(path, exc) from exc
        try:
            projects = _run_definition(path, data)
        finally:
            _REGISTRY[self.name] = self  # the re-run registered a newcomer under our name: we stay
        fresh_project = next((p for p in projects if p.name == self.name), None)
        if fresh_project is None:
            raise LoadError(path, ProjectError(f"{path} no longer defines project {self.name!r}"))
        self._adopt(fresh_project)
        self._definition_snapshot = snap
        log.info("projectr %s: re-read %s (%d files)", self.name, path, len(self._files))

    def _adopt(self, other: Project) -> None:
        self.root = other.root
        self._files, self._by_path = other._files, other._by_path
        self._resource_patterns = other._resource_patterns
        self._version += 1


def _run_definition(path: str, data: bytes) -> list[Project]:
    """Execute a definition file's source; return the projects it created, in creation order."""
    captured: list[Project] = []
    _CAPTURES.append(captured)
    _DEFINING.append(path)
    namespace = {"__file__": path, "__name__": "__projectr_definition__", "__builtins__": builtins}
    try:
        code = compile(data, path, "exec", dont_inherit=True)
        exec(code, namespace)
    except LoadError:
        raise
    except Exception as exc:  # ProjectError included: the message then names the definition's line
        raise LoadError(path, exc) from exc
    finally:
        _CAPTURES.remove(captured)
        _DEFINING.pop()
    return captured


def _caller_dir() -> str:
    """The folder of the file that called Project(...) (the current directory in a REPL)."""
    frame = sys._getframe(2)
    filename = frame.f_globals.get("__file__")
    return os.path.dirname(os.path.abspath(filename)) if filename else os.getcwd()


def _strip_py(name: str) -> str:
    return name[:-3] if name.endswith(".py") else name
