"""The master's single pid file: exactly the path given, created exclusively, removed on exit."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator

log = logging.getLogger("prefork.pidfile")


class PidFileError(RuntimeError):
    """The pid file names a live process, or cannot be written."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def read_pid(path: str) -> int | None:
    """Return the pid recorded in ``path``, or None when the file is missing or unreadable."""
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Return True when a process with ``pid`` exists (even one owned by another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _directory_lock(path: str) -> Iterator[None]:
    """Hold an exclusive flock on the pid file's directory (master).

    Replacing a stale file is read-check-unlink-link: without the lock, a master that read the
    stale pid could unlink the file another master had just linked, and both would run.
    """
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_temporary(path: str, text: str) -> str:
    """Write ``text`` to a new file next to ``path``; return its name (master).

    mkstemp picks an unpredictable name and opens it with O_CREAT|O_EXCL|O_NOFOLLOW: whatever
    another user planted in the directory (a symlink to a file of theirs or of root's) is neither
    followed nor overwritten. The ``<name>.`` prefix keeps a leftover recognisable.
    """
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f"{name}.", suffix=".tmp", dir=directory or ".")
    try:
        # Inside the try: a write that fails after the file exists (ENOSPC) must not leave it behind.
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the pid from monitors run as other users
            data = text.encode("ascii")
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return temporary


class PidFile:
    """Create, check and remove one pid file (runs in the master)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self.pid: int | None = None

    def create(self, pid: int | None = None) -> None:
        """Write ``pid`` (default: ours) to the path, atomically and exclusively.

        The content is written to a private temporary file (an unpredictable name of mkstemp's,
        created with O_EXCL and O_NOFOLLOW, so a symlink planted in the directory is never followed),
        then hard-linked to the path: the link fails if the path exists, so two masters started at
        once cannot both win, and a reader never sees a half-written file. A file naming a dead process
        (or nothing readable) is replaced;
        one naming a live process raises PidFileError.
        """
        pid = os.getpid() if pid is None else pid
        temporary = _write_temporary(self.path, f"{pid}\n")
        try:
            with _directory_lock(self.path):
                for _ in range(3):
                    try:
                        os.link(temporary, self.path)
                    except FileExistsError:
                        self._remove_if_stale(pid)
                        continue
                    self.pid = pid
                    return
            raise PidFileError(f"pid file {self.path} keeps reappearing; another master is starting")
        finally:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass

    def _remove_if_stale(self, pid: int) -> None:
        """Remove the existing file unless it names a live process other than ``pid``."""
        holder = read_pid(self.path)
        if holder is not None and holder != pid and process_alive(holder):
            raise PidFileError(f"pid file {self.path} names a live process {holder}", holder)
        log.warning("replacing stale pid file %s (pid %s is not running)", self.path, holder)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        """Remove the file if it still names the pid we wrote."""
        if self.pid is None:
            return
        if read_pid(self.path) == self.pid:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.pid = None
