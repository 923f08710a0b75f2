"""Hold a batch while git rewrites the work tree (`.git/index.lock` exists), so a checkout is one batch."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("projectr.watch")

# A lock older than this is left over by a crashed git: do not hold changes for it.
STALE_LOCK_SECONDS = 60.0


def find_git_dir(start: str) -> str | None:
    """Return the git directory of the repository holding `start` (following worktree files), or None."""
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, ".git")
        if os.path.isdir(candidate):
            return candidate
        if os.path.isfile(candidate):
            return _gitdir_from_file(candidate, here)
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _gitdir_from_file(path: str, base: str) -> str | None:
    """Read a worktree/submodule `.git` file (`gitdir: <path>`)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    return os.path.normpath(os.path.join(base, line.partition(":")[2].strip()))


def is_locked(git_dir: str | None) -> bool:
    """True while git holds its index lock (a checkout, rebase, merge is rewriting files)."""
    return held_for(git_dir) is not None


def held_for(git_dir: str | None) -> float | None:
    """Seconds until git's index lock counts as stale, or None if there is no lock (or a stale one)."""
    if git_dir is None:
        return None
    lock = os.path.join(git_dir, "index.lock")
    try:
        age = time.time() - os.stat(lock).st_mtime
    except OSError:
        return None
    if age > STALE_LOCK_SECONDS:
        log.warning("ignoring stale %s (%.0f s old)", lock, age)
        return None
    return STALE_LOCK_SECONDS - age
