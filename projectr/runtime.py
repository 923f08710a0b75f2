"""What a load sees while the batch executes: the project modules each file imports at run time,
and the warnings it raises.

The import scan (imports.py) reads source; it cannot see `importlib.import_module(name)`, nor an
import inside a function that a module calls while it executes (a registry's `autodiscover()`,
Django's `setup()` importing the settings module). While `execute()` runs, a Recorder wraps
`builtins.__import__` (every `import` statement) and importlib's `_gcd_import` (behind
`importlib.import_module`, however it was imported), and a stack says which file of the batch is
executing, so such an import is charged to the file whose execution made it. Everything is put
back when the load ends: imports outside `load()` cost nothing.

Warnings raised meanwhile (Django's "Model ... was already registered" on a reload) are recorded
instead of shown, as "file:line: Category: message", with the module that was executing, so that
load() can report them (`Project.last_load_warnings`, a WARNING log line) rather than let a reload
that duplicated state pass silently. The warning filters are untouched, but the "already shown"
registries are reset, so a warning that every reload repeats is reported by every reload.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .imports import with_parents

# importlib.import_module calls this module attribute at every call; patching it (rather than the
# function `importlib.import_module`) also catches `from importlib import import_module` done long ago.
_BOOTSTRAP: Any = sys.modules.get("importlib._bootstrap") or importlib._bootstrap  # its _gcd_import is private


@dataclass(frozen=True)
class Scope:
    """A project's modules as the loader needs them: names to record, where each file is."""

    by_module: Mapping[str, str]  # module name -> absolute path
    by_path: Mapping[str, str]  # absolute path -> module name
    tops: frozenset[str]  # first components of the module names: the project's namespace

    @classmethod
    def of(cls, by_module: Mapping[str, str]) -> Scope:
        """Build from the project's module -> path map."""
        return cls(
            dict(by_module), {p: m for m, p in by_module.items()}, frozenset(m.partition(".")[0] for m in by_module)
        )

    def is_project(self, name: str) -> bool:
        """True for any module under the project's top-level packages or modules, declared or not
        (an undeclared sibling, a namespace parent): what a failed load must not leave behind.
        Everything else is third-party code, which a rollback keeps."""
        return name.partition(".")[0] in self.tops


@dataclass
class Observed:
    """What executing a batch observed: per executed file, the project modules its execution imported;
    the warnings raised, each as (module executing, "file:line: Category: message")."""

    imports: dict[str, set[str]] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)


class Recorder:
    """Context manager: while active, imports made in this thread are charged to the executing file."""

    def __init__(self, scope: Scope, observed: Observed) -> None:
        self.scope = scope
        self.observed = observed
        self._stack: list[tuple[str, str]] = []  # (path, module) of the files executing, innermost last
        self._thread = threading.get_ident()  # other threads' imports are theirs, not the batch's
        self._active = False
        self._real_import: Callable[..., ModuleType] = builtins.__import__
        self._real_gcd: Callable[..., Any] | None = None
        self._real_showwarning: Callable[..., Any] = warnings.showwarning

    def __enter__(self) -> Recorder:
        self._real_import = builtins.__import__
        self._real_gcd = getattr(_BOOTSTRAP, "_gcd_import", None)
        self._real_showwarning = warnings.showwarning
        self._active = True
        builtins.__import__ = self._import
        if self._real_gcd is not None:
            _BOOTSTRAP._gcd_import = self._gcd_import
        warnings.showwarning = self._showwarning  # the documented hook; filters stay as they are
        reset = getattr(warnings, "_filters_mutated", None)  # what catch_warnings calls, for the same reason
        if reset is not None:
            reset()
        return self

    def __exit__(self, *exc: object) -> None:
        # If code run by the batch wrapped __import__ over ours, theirs stays (removing it would break
        # them) and ours, now inactive, just passes calls through.
        self._active = False
        if builtins.__import__ == self._import:
            builtins.__import__ = self._real_import
        if self._real_gcd is not None and getattr(_BOOTSTRAP, "_gcd_import", None) == self._gcd_import:
            _BOOTSTRAP._gcd_import = self._real_gcd
        if warnings.showwarning == self._showwarning:  # e.g. logging.captureWarnings() ran: keep theirs
            warnings.showwarning = self._real_showwarning

    def push(self, path: str, module: str) -> None:
        """`path` starts executing: charge imports to it until the matching pop() (files nest)."""
        self._stack.append((path, module))
        self.observed.imports.setdefault(path, set())

    def pop(self) -> None:
        """The innermost executing file is done; imports go to the one it interrupted."""
        self._stack.pop()

    def _import(
        self,
        name: str,
        globals: Mapping[str, object] | None = None,
        locals: Mapping[str, object] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        """builtins.__import__ while loading: note the project modules the statement names, then import."""
        if self._active and self._stack and threading.get_ident() == self._thread:
            if level or name.partition(".")[0] in self.scope.tops:  # most imports are not ours: cheap exit
                try:
                    self._note(_statement_targets(name, globals, fromlist, level))
                except Exception:  # noqa: BLE001 - odd arguments: the import itself will say what is wrong
                    pass
        return self._real_import(name, globals, locals, fromlist, level)

    def _gcd_import(self, name: str, package: str | None = None, level: int = 0) -> Any:
        """importlib's _gcd_import while loading (import_module): note the module, then import it."""
        if self._active and self._stack and threading.get_ident() == self._thread:
            try:
                target = _resolve(name, package, level) if level else name
                if target is not None:
                    self._note([target])
            except Exception:  # noqa: BLE001 - odd arguments: the import itself will say what is wrong
                pass
        assert self._real_gcd is not None
        return self._real_gcd(name, package, level)

    def _showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        """warnings.showwarning while loading: record the batch's warnings; others are shown as usual."""
        if not self._active or threading.get_ident() != self._thread:
            self._real_showwarning(message, category, filename, lineno, file, line)
            return
        where = self._where(filename, lineno)
        module = self._stack[-1][1] if self._stack else self.scope.by_path.get(where[0])
        if module is None:
            self._real_showwarning(message, category, filename, lineno, file, line)
            return
        self.observed.warnings.append((module, f"{where[0]}:{where[1]}: {category.__name__}: {message}"))

    def _where(self, filename: str, lineno: int) -> tuple[str, int]:
        """The warning's own location if it is a project file, else the innermost project line on the
        stack (Django warns from its own code: the model's class statement is what matters)."""
        if filename in self.scope.by_path:
            return filename, lineno
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename in self.scope.by_path:
                return frame.f_code.co_filename, frame.f_lineno
            frame = frame.f_back  # type: ignore[assignment]
        return filename, lineno

    def _note(self, names: list[str]) -> None:
        path, module = self._stack[-1]
        known = self.scope.by_module
        seen = self.observed.imports[path]
        for name in names:
            if name in known and name != module:
                seen.add(name)


def _statement_targets(
    name: str, globals: Mapping[str, object] | None, fromlist: Sequence[str] | None, level: int
) -> list[str]:
    """The modules an import statement names, as the source scan counts them (imports.py)."""
    if level:
        base = _resolve(name, _package_of(globals), level)
        if base is None:
            return []
    else:
        base = name
    if not fromlist:
        return with_parents(base)  # `import a.b.c` binds a, and runs a, a.b, a.b.c
    # `from a.b import c` binds c only: a.b, and a.b.c in case c is a submodule
    return ([base] if base else []) + [f"{base}.{n}" if base else n for n in fromlist if n != "*"]


def _package_of(globals: Mapping[str, Any] | None) -> str | None:
    """The package a relative import in a module with these globals is relative to (as importlib does)."""
    if not globals:
        return None
    package = globals.get("__package__")
    if package is None:
        spec = globals.get("__spec__")
        if spec is not None:
            return spec.parent  # type: ignore[no-any-return]
        name = globals.get("__name__")
        if not isinstance(name, str):
            return None
        return name if "__path__" in globals else name.rpartition(".")[0]
    return package if isinstance(package, str) else None


def _resolve(name: str, package: str | None, level: int) -> str | None:
    """Absolute module name of a relative import, or None if it cannot be resolved (importlib will raise)."""
    if not package:
        return None
    bits = package.rsplit(".", level - 1)
    if len(bits) < level:
        return None
    return f"{bits[0]}.{name}" if name else bits[0]
