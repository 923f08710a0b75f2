"""projectr: declare a project's files and dependencies, reload exactly what changed, watch the disk."""

from __future__ import annotations

from .errors import LoadError, ProjectError
from .project import Project
from .watch import Watcher, watch

__all__ = ["LoadError", "Project", "ProjectError", "Watcher", "watch"]


def __getattr__(name: str) -> str:
    """`projectr.__version__`: the installed distribution's version (pyproject.toml holds the one copy).

    Looked up on first use, so importing projectr does not import importlib.metadata.
    """
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("projectr-prefork")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
