"""Transactional execution of modules: all affected modules are replaced, or none.

Each file is compiled from its source (never from a .pyc, whose cache keys on mtime seconds and
size and can serve stale code) and executed into a NEW module object by the import system, in
load order. If any of them raises, `sys.modules` and the parent packages' attributes are put
back exactly as they were for the project's modules (rollback.py) and LoadError is raised. No
threads, no global state: safe to call in a forked child.
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
from .rollback import Transaction
from .runtime import Observed, Recorder, Scope


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
    interpreter's import would. `observed` receives, per file, the modules of `scope` that its
    execution imported, and the warnings raised (see runtime.py); rollback.py says what a failure
    puts back.
    """
    scope = scope or Scope.of({u.module: u.path for u in units})
    recorder = Recorder(scope, observed or Observed())
    with recorder:  # a SyntaxWarning is the project's to report too
        codes = {u.module: (u, compile_unit(u)) for u in units}  # fail on syntax before anything runs
    txn = Transaction(scope)
    finder = _BatchFinder(codes, recorder, txn)
    sys.meta_path.insert(0, finder)
    try:
        for unit in units:  # inside the try: an interruption here is rolled back too
            txn.detach(unit.module)
        with recorder:
            for unit in units:
                if unit.module not in sys.modules:
                    importlib.import_module(unit.module)
    except Exception as exc:
        txn.rollback()
        raise LoadError(finder.failed or units[0].path, exc, exc.__traceback__) from exc
    except BaseException:
        txn.rollback()
        raise
    finally:
        with contextlib.suppress(ValueError):  # the batch's own code may have rearranged meta_path
            sys.meta_path.remove(finder)
    for unit in units:
        linecache.cache.pop(unit.path, None)  # tracebacks must show the new source


class _BatchFinder(importlib.abc.MetaPathFinder):
    """Serves the batch's modules (each once) from the code compiled for this load."""

    def __init__(self, codes: dict[str, tuple[Unit, types.CodeType]], recorder: Recorder, txn: Transaction) -> None:
        self.codes = codes
        self.recorder = recorder
        self.txn = txn
        self.failed: str | None = None

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = self.codes.pop(fullname, None)
        if entry is None:
            # first in sys.meta_path, we see every first import of the load before it happens
            self.txn.first_import(fullname)
            return None
        unit, code = entry
        loader = _UnitLoader(self, unit, code)
        locations = [os.path.dirname(unit.path)] if unit.is_package else None
        return importlib.util.spec_from_file_location(
            unit.module, unit.path, loader=loader, submodule_search_locations=locations
        )


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


def _attach_children(name: str, package: types.ModuleType) -> None:
    """Give a fresh package object the already-loaded submodules a fresh import would attach."""
    prefix = name + "."
    for key, sub in list(sys.modules.items()):
        if key.startswith(prefix) and "." not in key[len(prefix) :] and sub is not None:
            package.__dict__.setdefault(key[len(prefix) :], sub)
