"""Pure logic of change detection, debounce and filters (fast, no watchers)."""
from __future__ import annotations

import os
import time

from projectr import changes
from projectr.watch import DefaultFilter, WatchSet, settle


def test_snapshot_is_racy_only_near_its_read_time(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("A = 1\n")
    data, snap = changes.read(str(path))
    assert data == b"A = 1\n" and snap.racy  # just written: a same-tick write could hide
    old = snap.mtime_ns - 10 * 10**9
    os.utime(path, ns=(old, old))
    _, aged = changes.read(str(path))
    assert not aged.racy


def test_check_hashes_racy_files_and_refreshes_them(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("A = 1\n")
    _, snap = changes.read(str(path))
    assert changes.check(str(path), snap)[0] is False
    path.write_text("A = 2\n")
    os.utime(path, ns=(snap.mtime_ns, snap.mtime_ns))
    assert changes.check(str(path), snap)[0]  # same stat, new content: seen through the hash
    # once our read is well after the mtime, the refreshed snapshot is clean: stat alone vouches
    later = snap.__class__(snap.mtime_ns, snap.size, snap.inode, snap.digest, snap.mtime_ns + 3 * 10**9)
    assert not later.racy


def test_check_sees_new_mtime_size_inode_and_missing_files(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("A = 1\n")
    _, snap = changes.read(str(path))
    os.utime(path, ns=(snap.mtime_ns + 10**9, snap.mtime_ns + 10**9))
    assert changes.check(str(path), snap) == (True, None)  # touch is a change
    assert changes.check(str(path), None) == (True, None)
    path.unlink()
    assert changes.check(str(path), snap) == (True, None)


def test_settle_stops_at_quiet_and_at_the_limit():
    calls = []
    settle(lambda t: calls.append(t) or len(calls) < 3, window=0.001, limit=1.0)
    assert len(calls) == 3
    start = time.monotonic()
    settle(lambda t: True, window=0.001, limit=0.02)  # events never stop: bounded by the limit
    assert time.monotonic() - start < 0.5
    settle(lambda t: (_ for _ in ()).throw(AssertionError("not called")), window=0)


def test_default_filter_and_watch_set_matching():
    accept = DefaultFilter()
    assert accept("/p/app/views.py") and accept("/p/templates/index.html")
    for junk in ("/p/.views.py.swp", "/p/views.py~", "/p/4913", "/p/__pycache__/x.html", "/p/.git/index.html",
                 "/p/#views.py#"):
        assert not accept(junk), junk
    ws = WatchSet(frozenset({"/p/app/views.py"}), ("/p/app/templates/*.html",), {"/p/app/views.py": 0}, None)
    assert ws.matches("/p/app/views.py")
    assert ws.matches("/p/app/templates/new.html")
    assert not ws.matches("/p/app/templates/sub/new.html")
    assert not ws.matches("/p/app/templates/.new.html.swp")
    assert not ws.matches("/p/app/other.py")
    assert ws.ordered({"/p/z", "/p/app/views.py", "/p/a"}) == ["/p/app/views.py", "/p/a", "/p/z"]
