"""Where sys.modules ends, and what was imported since (the base and the generations).

A process forked from the base shares the base's memory until it writes to it, and reading a
module object writes its reference count: a walk over every module copies the pages they live
on (4-15 ms on each reload of a Django generation). The base and the generations therefore find
what an import added from the end of sys.modules (a dict keeps insertion order), touching only
the modules it added.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefork.discover import is_project_file

Mark = tuple[int, str]  # len(sys.modules) and its last name at some moment


def mark() -> Mark:
    """Where sys.modules ends now; modules imported later are added after it."""
    return len(sys.modules), next(reversed(sys.modules))


def since(where: Mark) -> list[tuple[str, Any]] | None:
    """The (name, module) pairs added to sys.modules since ``where``, oldest first.

    None when a module from before the mark was removed since: the mark says nothing then.
    """
    count, last = where
    added = []
    for name, module in reversed(sys.modules.items()):
        if name == last:
            break
        added.append((name, module))
    else:
        return None
    if count + len(added) != len(sys.modules):
        return None
    added.reverse()
    return added


def forget(names: list[str]) -> None:
    """Remove modules from sys.modules and from their parent packages' namespaces."""
    for name in names:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            sys.modules[parent].__dict__.pop(child, None)


def is_project_module(module: Any, root: str) -> bool:
    """True for a module loaded from a project source file under ``root``."""
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and is_project_file(os.path.abspath(path), root)


def of_project(root: str) -> list[str]:
    """The names of the project modules in sys.modules (reads every module: for a process that
    shares no memory yet, or when nothing else says which)."""
    return [name for name, module in list(sys.modules.items()) if is_project_module(module, root)]
