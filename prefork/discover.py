"""Zero configuration: the working directory's source files are the project (master).

``prefork APP --reload`` without ``--project`` declares every ``.py`` file under the root (minus
virtualenvs, installed packages, VCS and build folders) as a project file, and watches the
templates and configuration files next to them as resources, in every folder, new files included.
Which modules the app really imports, at start or on the first request, does not matter: the
watch set comes from the disk, and the generations decide what a change needs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from projectr import Project
from projectr.watch.filters import DefaultFilter

# Folders that are never the project's own source: the ones the watcher ignores (tool and
# editor folders) plus virtualenvs, build output, installed packages and static/media files.
SKIP_DIRS = frozenset(DefaultFilter().ignore_dirs) | {
    ".ruff_cache",
    ".nox",
    "venv",
    "env",
    ".eggs",
    "build",
    "dist",
    "site-packages",
    "dist-packages",
    "htmlcov",
    "static",
    "staticfiles",
    "media",
}
# Files read by the app or its framework that are not Python: templates and configuration.
RESOURCE_SUFFIXES = (
    ".html",
    ".htm",
    ".jinja",
    ".jinja2",
    ".j2",
    ".txt",
    ".xml",
    ".json",
    ".toml",
    ".yaml",
    ".yml",
    ".cfg",
    ".ini",
    ".env",
    ".mo",
)


def is_project_file(path: str, root: str) -> bool:
    """True for a file under ``root`` that is not in a skipped folder (any process)."""
    if not path.startswith(root.rstrip(os.sep) + os.sep):
        return False
    parts = Path(path).relative_to(root).parts[:-1]
    return not any(_skipped(part) for part in parts)


def _skipped(name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info") or name.startswith(".")


def _is_virtualenv(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "pyvenv.cfg"))


def discover_project(app_spec: str, root: str | os.PathLike[str] | None = None) -> Project:
    """A Project of every source file under ``root`` (default: the working directory)."""
    base = os.path.realpath(root or os.getcwd())
    project = Project(f"prefork:{app_spec}", root=base)
    for folder in _folders(base):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and os.path.isfile(os.path.join(folder, name)):
                declare_file(project, os.path.join(folder, name))
    watch_tree(project)
    return project


def watch_tree(project: Project) -> None:
    """Watch templates, configuration and new modules in every folder under the project's root.

    A definition file only adds precision: templates (Django's and Jinja's folders included) and
    modules it does not list are still watched, so what is served never depends on the list.
    """
    known = set(project.resource_patterns)
    for folder in _folders(project.root):
        with _in_folder(project, os.path.relpath(folder, project.root)):
            for suffix in RESOURCE_SUFFIXES + (".py",):  # .py: new modules are seen too
                if os.path.join(folder, f"*{suffix}") not in known:
                    project.resource(f"*{suffix}")


def _folders(root: str) -> list[str]:
    """``root`` and every folder below it that can hold the project's own files."""
    found = []
    for folder, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped(d) and not _is_virtualenv(os.path.join(folder, d)))
        found.append(folder)
    return found


def declare_file(project: Project, path: str) -> bool:
    """Declare one ``.py`` file of the project, if its path can be a module; True when declared."""
    rel = Path(path).relative_to(project.root).with_suffix("")
    if not all(part.isidentifier() for part in rel.parts):
        return False
    with _in_folder(project, str(rel.parent)):
        project.file(rel.name)
    return True


@contextlib.contextmanager
def _in_folder(project: Project, rel: str):  # type: ignore[no-untyped-def]
    """``project.directory(rel)`` for each part of ``rel`` ('.' is the root)."""
    with contextlib.ExitStack() as stack:
        for part in Path(rel).parts:
            if part != ".":
                stack.enter_context(project.directory(part))
        yield
