"""projectr: declare a project's files and dependencies, reload exactly what changed, watch the disk."""
from .errors import LoadError, ProjectError
from .project import Project
from .watch import Watcher, watch

__all__ = ["LoadError", "Project", "ProjectError", "Watcher", "watch"]
