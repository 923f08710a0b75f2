"""Which paths a watcher reports: the exact known files, plus resource globs minus editor litter."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import PurePath


@dataclass
class DefaultFilter:
    """Reject editor swap/backup files and tool folders; extend `ignore_names`/`ignore_dirs` as needed.

    Called with an absolute path; returns True to keep it.
    """

    ignore_names: list[str] = field(
        default_factory=lambda: [
            "*.swp",
            "*.swx",
            "*.swo",
            "*~",
            ".#*",
            "#*#",
            "4913",
            "*.tmp",
            "*.bak",
            "*.orig",
            ".DS_Store",
            "*.pyc",
            "*.pyo",
            "___jb_*___",
        ]
    )
    ignore_dirs: list[str] = field(
        default_factory=lambda: [
            "__pycache__",
            ".git",
            ".hg",
            ".svn",
            ".idea",
            ".vscode",
            "node_modules",
            ".mypy_cache",
            ".pytest_cache",
            ".tox",
            ".venv",
        ]
    )

    def __call__(self, path: str) -> bool:
        name = os.path.basename(path)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore_names):
            return False
        parts = set(PurePath(path).parts[:-1])
        return not any(d in parts for d in self.ignore_dirs)


@dataclass(frozen=True)
class WatchSet:
    """What one watcher looks for: exact files, resource globs, their folders, the git dir."""

    files: frozenset[str]
    patterns: tuple[str, ...]
    rank: dict[str, int]
    git_dir: str | None
    accept: DefaultFilter = field(default_factory=DefaultFilter)

    def matches(self, path: str) -> bool:
        """True if a change to `path` concerns the project."""
        if path in self.files:
            return True
        if not self.patterns or not self.accept(path):
            return False
        pure = PurePath(path)
        return any(pure.match(pattern) for pattern in self.patterns)

    def directories(self) -> set[str]:
        """Folders to watch: those holding known files and the fixed part of each glob."""
        dirs = {os.path.dirname(p) for p in self.files}
        for pattern in self.patterns:
            dirs.add(_fixed_prefix(os.path.dirname(pattern)))
        return {d for d in dirs if os.path.isdir(d)}

    def ordered(self, paths: set[str]) -> list[str]:
        """Sort paths in project order (sources as declared, then the rest by name)."""
        end = len(self.rank)
        return sorted(paths, key=lambda p: (self.rank.get(p, end), p))


def _fixed_prefix(directory: str) -> str:
    """The part of a glob's folder before the first wildcard."""
    parts = []
    for part in PurePath(directory).parts:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return str(PurePath(*parts)) if parts else directory
