"""Transactional execution of modules: all affected modules are replaced, or none.

Each file is compiled from its source (never from a .pyc, whose cache keys on mtime seconds and
size and can serve stale code) and executed into a NEW module object by the import system, in
load order. If any of them raises, `sys.modules` and the parent packages' attributes are put
back exactly as they were and LoadError is raised. No threads, no
global state: safe to call in a forked child.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec

from .errors import LoadError
from .runtime import Observed, Recorder, Scope

_MISSING = object()


@dataclass(frozen=True)
class Unit:
    """One file to execute: its path, module name, and source."""

    path: str
    module: str
    is_package: bool
    source: bytes


def compile_unit(unit: Unit) -> types.CodeType:
    """Compile a unit's source; a SyntaxError becomes a LoadError naming file and line."""
    try:
        return compile(unit.source, unit.path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise LoadError(unit.path, exc) from exc


def execute(units: Sequence[Unit], scope: Scope | None = None, observed: Observed | None = None) -> None:
    """Execute `units` in order as one transaction; on failure restore everything and raise LoadError.

    The batch's modules are taken out of `sys.modules` (and off their parents) first, and a finder
    serves them from our compiled code, so when one of them imports another that has not run yet
    (an import cycle, or a dependency declared later) it runs then, once, exactly as a fresh
    interpreter's import would. `observed.imports` receives, per file, the modules of `scope` that
    its execution imported (see runtime.py).
    """
    codes = {u.module: (u, compile_unit(u)) for u in units}  # fail on syntax before anything runs
    recorder = Recorder(scope or Scope.of({u.module: u.path for u in units}), observed or Observed())
    saved = dict(sys.modules)
    attr_log = _detach(units)
    finder = _BatchFinder(codes, recorder)
    sys.meta_path.insert(0, finder)
    try:
        with recorder:
            for unit in units:
                if unit.module not in sys.modules:
                    importlib.import_module(unit.module)
    except Exception as exc:
        _restore(saved, attr_log)
        raise LoadError(finder.failed or units[0].path, exc, exc.__traceback__) from exc
    except BaseException:
        _restore(saved, attr_log)
        raise
    finally:
        with contextlib.suppress(ValueError):  # the batch's own code may have rearranged meta_path
            sys.meta_path.remove(finder)
    for unit in units:
        linecache.cache.pop(unit.path, None)  # tracebacks must show the new source


class _BatchFinder(importlib.abc.MetaPathFinder):
    """Serves the batch's modules (each once) from the code compiled for this load."""

    def __init__(self, codes: dict[str, tuple[Unit, types.CodeType]], recorder: Recorder) -> None:
        self.codes = codes
        self.recorder = recorder
        self.failed: str | None = None

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = self.codes.pop(fullname, None)
        if entry is None:
            return None
        unit, code = entry
        loader = _UnitLoader(self, unit, code)
        locations = [os.path.dirname(unit.path)] if unit.is_package else None
        return importlib.util.spec_from_file_location(unit.module, unit.path, loader=loader,
                                                      submodule_search_locations=locations)


class _UnitLoader(importlib.machinery.SourceFileLoader):
    """Runs one unit's compiled code; later `get_code` calls compile the source (never a .pyc)."""

    def __init__(self, finder: _BatchFinder, unit: Unit, code: types.CodeType) -> None:
        super().__init__(unit.module, unit.path)
        self._finder: _BatchFinder | None = finder
        self._is_package = unit.is_package  # not the Unit: the module keeps its loader, not its source
        self._code: types.CodeType | None = code

    def get_code(self, fullname: str) -> types.CodeType:
        code, self._code = self._code, None
        if code is None:
            return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)
        return code

    def exec_module(self, module: types.ModuleType) -> None:
        finder, self._finder = self._finder, None
        try:
            if finder is None:  # a later importlib.reload(): an ordinary import
                super().exec_module(module)
            else:
                finder.recorder.push(self.path, self.name)
                try:
                    super().exec_module(module)
                finally:
                    finder.recorder.pop()
        except BaseException:
            if finder is not None and finder.failed is None:
                finder.failed = self.path  # the innermost unit that raised
            raise
        if self._is_package:
            _attach_children(self.name, module)


def _detach(units: Sequence[Unit]) -> list[tuple[object, str, object]]:
    """Take the batch's modules out of sys.modules and off their parents; return what to put back."""
    log: list[tuple[object, str, object]] = []
    for unit in units:
        sys.modules.pop(unit.module, None)
        parent_name, _, child = unit.module.rpartition(".")
        parent = sys.modules.get(parent_name) if parent_name else None
        if parent is not None and child in parent.__dict__:
            log.append((parent, child, parent.__dict__.pop(child)))
        elif parent is not None:
            log.append((parent, child, _MISSING))
    return log


def _attach_children(name: str, package: types.ModuleType) -> None:
    """Give a fresh package object the already-loaded submodules a fresh import would attach."""
    prefix = name + "."
    for key, sub in list(sys.modules.items()):
        if key.startswith(prefix) and "." not in key[len(prefix):] and sub is not None:
            package.__dict__.setdefault(key[len(prefix):], sub)


def _restore(saved: dict[str, types.ModuleType], attr_log: list[tuple[object, str, object]]) -> None:
    """Put sys.modules and the parent attributes back exactly as they were."""
    for key in [k for k in sys.modules if k not in saved]:
        del sys.modules[key]
    for key, module in saved.items():
        if sys.modules.get(key) is not module:
            sys.modules[key] = module
    for obj, attr, old in reversed(attr_log):
        if old is _MISSING:
            obj.__dict__.pop(attr, None)
        else:
            setattr(obj, attr, old)
