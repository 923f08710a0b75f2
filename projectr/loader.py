"""Transactional execution of modules: all affected modules are replaced, or none.

Each file is compiled from its source (never from a .pyc, whose cache keys on mtime seconds and
size and can serve stale code) and executed into a NEW module object, in load order. The new
objects are visible in `sys.modules` and as attributes of their parent packages while the batch
runs, so the batch's modules import each other; if any of them raises, `sys.modules` and the
parent attributes are put back exactly as they were and LoadError is raised. No threads, no
global state: safe to call in a forked child.
"""
from __future__ import annotations

import importlib
import importlib.util
import linecache
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LoadError

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


def execute(units: Sequence[Unit]) -> None:
    """Execute `units` in order as one transaction; on failure restore everything and raise LoadError."""
    codes = [compile_unit(u) for u in units]  # fail on syntax before anything runs
    saved = dict(sys.modules)
    attr_log: list[tuple[object, str, object]] = []
    current = units[0].path if units else ""
    try:
        for unit, code in zip(units, codes):
            current = unit.path
            _execute_one(unit, code, attr_log)
    except Exception as exc:
        _restore(saved, attr_log)
        raise LoadError(current, exc, exc.__traceback__) from exc
    except BaseException:
        _restore(saved, attr_log)
        raise
    for unit in units:
        linecache.cache.pop(unit.path, None)  # tracebacks must show the new source


def _new_module(unit: Unit) -> types.ModuleType:
    """Make an empty module object that looks like the import system made it."""
    locations = [os.path.dirname(unit.path)] if unit.is_package else None
    spec = importlib.util.spec_from_file_location(unit.module, unit.path,
                                                  submodule_search_locations=locations)
    module = types.ModuleType(unit.module)
    module.__spec__ = spec
    module.__loader__ = spec.loader if spec else None
    module.__file__ = unit.path
    module.__cached__ = None
    module.__package__ = unit.module if unit.is_package else unit.module.rpartition(".")[0]
    if unit.is_package:
        module.__path__ = list(locations or [])
    return module


def _execute_one(unit: Unit, code: types.CodeType, attr_log: list[tuple[object, str, object]]) -> None:
    """Run one unit into a fresh module registered in sys.modules and on its parent package."""
    module = _new_module(unit)
    sys.modules[unit.module] = module
    parent_name, _, child = unit.module.rpartition(".")
    if parent_name:
        parent = sys.modules.get(parent_name) or importlib.import_module(parent_name)
        attr_log.append((parent, child, getattr(parent, child, _MISSING)))
        setattr(parent, child, module)
    exec(code, module.__dict__)
    module = sys.modules.get(unit.module, module)  # a module may replace itself, as import allows
    if parent_name:
        setattr(sys.modules[parent_name], child, module)
    if unit.is_package:
        _attach_children(unit.module, module)


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
