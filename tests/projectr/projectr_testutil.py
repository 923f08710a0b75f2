"""Helpers for projectr tests: throw-away projects in tmp_path with unique package names."""
from __future__ import annotations

import itertools
import os
import select
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from projectr import Project
from projectr import project as project_module

_counter = itertools.count()


class Tree:
    """A folder of source files for one test, with a package name no other test uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkg = f"pr{uuid.uuid4().hex[:10]}"

    def path(self, rel: str) -> Path:
        return self.root / rel.replace("PKG", self.pkg)

    def write(self, rel: str, text: str = "") -> str:
        """Write a file (PKG in rel/text is replaced by the package name); return its absolute path."""
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("PKG", self.pkg))
        return str(path)

    def project(self, name: str | None = None) -> Project:
        return Project(name or f"{self.pkg}-{next(_counter)}", root=self.root)


def bump_mtime(path: str | Path, seconds: float = 10.0) -> None:
    """Move a file's mtime forward without sleeping (a different timestamp, as a later save makes)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def wait_readable(fd_owner: object, timeout: float = 5.0) -> bool:
    """Wait on a watcher's fd; True if it became readable within `timeout`."""
    ready, _, _ = select.select([fd_owner], [], [], timeout)
    return bool(ready)


def collect_changes(watcher, expected: set[str], timeout: float = 5.0) -> set[str]:
    """Gather changed_files() until `expected` is covered or the deadline passes (waits on the fd)."""
    import time
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not expected <= seen:
        left = deadline - time.monotonic()
        if left <= 0 or not wait_readable(watcher, left):
            break
        seen.update(watcher.changed_files())
    return seen


def next_batch(watcher, timeout: float = 5.0) -> list[str]:
    """The next non-empty changed_files() batch, waiting on the fd (a burst's window ends by itself)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not wait_readable(watcher, left):
            return []
        batch = watcher.changed_files()
        if batch:
            return batch


def run_python(code: str, cwd: str | Path, timeout: float = 60.0,
               extra_args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter (own session), killed by process group on timeout."""
    proc = subprocess.Popen([sys.executable, *(extra_args or []), "-c", code], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def tree(tmp_path: Path):
    """A Tree in tmp_path; afterwards its modules, sys.path entry and projects are forgotten."""
    saved_path = list(sys.path)
    saved_registry = dict(project_module._REGISTRY)
    t = Tree(tmp_path)
    yield t
    for key in [k for k in sys.modules if k == t.pkg or k.startswith(t.pkg + ".")]:
        del sys.modules[key]
    sys.path[:] = saved_path
    project_module._REGISTRY.clear()
    project_module._REGISTRY.update(saved_registry)


