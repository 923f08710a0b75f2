"""``prefork --reload`` without ``--project``: a Project made of the app's own modules (master)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from projectr import Project

from prefork.apps import resolve_app
from prefork.server.trial import last_json_line, report_line


def discover_project(app_spec: str, root: str | os.PathLike[str] | None = None) -> Project:
    """A Project of the modules that importing ``app_spec`` loads from files under ``root``.

    This is ``prefork --reload`` without ``--project``: the app is imported in a throwaway forked
    child (so the master imports it only once, through the project), and every module it loaded
    from a ``.py`` file under ``root`` (default: the current directory; installed packages and
    virtualenvs excluded) is declared in import order; projectr discovers the edges between them.
    Raises ImportError with the child's error when the app cannot be imported. Runs in the master.
    """
    base = os.path.realpath(root or os.getcwd())
    modules = _modules_imported_by(app_spec, base)
    project = Project(f"prefork:{app_spec}", root=base)
    for rel in modules:
        with contextlib.ExitStack() as stack:
            *folders, stem = Path(rel).with_suffix("").parts
            for folder in folders:
                stack.enter_context(project.directory(folder))
            project.file(stem)
    return project


def _modules_imported_by(app_spec: str, base: str) -> list[str]:
    """Import ``app_spec`` in a forked child; return the files (relative to ``base``) it loaded."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        status = 0
        try:
            if base not in map(os.path.realpath, filter(None, sys.path)):
                sys.path.insert(0, base)
            before = set(sys.modules)
            resolve_app(app_spec)
            found = [os.path.relpath(os.path.realpath(module.__file__), base)
                     for name, module in list(sys.modules.items())
                     if name not in before and _is_local_module(name, module, base)]
            report_line(write_fd, ok=True, modules=found)
        except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
            report_line(write_fd, ok=False, error=f"{type(exc).__name__}: {exc}")
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        text = pipe.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    report = last_json_line(text)
    if report is None or not report.get("ok"):
        raise ImportError((report or {}).get("error") or "the import child died without a report")
    return list(report["modules"])


def _is_local_module(name: str, module: Any, base: str) -> bool:
    """True for a module loaded from a .py file under ``base`` that is not an installed package."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py") or name == "__main__":
        return False
    path = os.path.realpath(path)
    if not path.startswith(base + os.sep) or "site-packages" in path:
        return False
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    if any(path.startswith(prefix + os.sep) for prefix in prefixes):
        return False
    rel = Path(path).relative_to(base).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts) == name and _declared_name_ok(rel)


def _declared_name_ok(rel: Path) -> bool:
    """Only paths whose every part is an identifier can be modules of a project."""
    return all(part.isidentifier() for part in rel.parts)
