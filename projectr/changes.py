"""Change detection: stat first, a content hash only when the stat cannot vouch for the file.

A new mtime, size or inode is a change (so `touch` forces a reload, as in make). A file whose mtime
lies within RACY_WINDOW_NS of when we read it is "racily clean" (git's term): a second write in the
same timestamp tick could leave mtime and size unchanged, so for such files the content is hashed.
Once a check happens after the window has passed, the file is clean again and costs one stat.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, replace

# Coarse file-system timestamps: ext3/HFS+ 1 s, FAT 2 s, kernel coarse clock a few ms.
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class Snapshot:
    """What we knew about a file when we last read it."""

    mtime_ns: int
    size: int
    inode: int
    digest: bytes
    read_ns: int

    @property
    def racy(self) -> bool:
        """True if a write in the same timestamp tick as our read could go unseen by stat."""
        return self.mtime_ns + RACY_WINDOW_NS > self.read_ns


def digest(data: bytes) -> bytes:
    """Hash file content (fast, not for security)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def read(path: str) -> tuple[bytes, Snapshot]:
    """Read a file and return its content with the snapshot that vouches for exactly that content."""
    started = time.time_ns()  # before the read: a write after this instant must look racy
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return data, Snapshot(st.st_mtime_ns, st.st_size, st.st_ino, digest(data), started)


def check(path: str, snap: Snapshot | None) -> tuple[bool, Snapshot | None]:
    """Return (changed, refreshed snapshot) for `path` against what we recorded.

    A missing file, or one never recorded, is changed. The refreshed snapshot (same content,
    later read time) lets a racily clean file become clean; None when the file changed.
    """
    if snap is None:
        return True, None
    try:
        st = os.stat(path)
    except OSError:
        return True, None
    if (st.st_mtime_ns, st.st_size, st.st_ino) != (snap.mtime_ns, snap.size, snap.inode):
        return True, None
    if not snap.racy:
        return False, snap
    try:
        data, fresh = read(path)
    except OSError:
        return True, None
    if fresh.digest != snap.digest:
        return True, None
    return False, replace(snap, read_ns=fresh.read_ns)
