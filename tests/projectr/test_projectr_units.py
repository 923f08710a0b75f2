"""Pure logic of change detection, debounce and filters (fast, no watchers)."""
from __future__ import annotations

import os
import time

import pytest

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


def test_burst_window_extends_with_events_and_stops_at_the_limit():
    from projectr.watch import Burst
    burst = Burst(window=0.01, limit=0.05)
    assert burst.remaining(100.0) == 0  # no event yet: nothing to hold
    burst.extend(100.0)
    assert burst.remaining(100.0) == pytest.approx(0.01)
    burst.extend(100.008)  # more events within the window: it goes on
    assert burst.remaining(100.01) == pytest.approx(0.008)
    for t in (100.02, 100.03, 100.04, 100.045):
        burst.extend(t)  # events never stop: the limit ends the burst
    assert burst.remaining(100.045) == pytest.approx(0.005)
    assert burst.remaining(100.05) <= 0
    burst.reset()
    assert burst.remaining(200.0) == 0
    idle = Burst(window=0)
    idle.extend(1.0)
    assert idle.remaining(1.0) == 0  # debounce=0: every batch at once


def _readable_after(fd_owner, timeout: float) -> float | None:
    """Seconds until the fd became readable, or None within `timeout`."""
    import select
    start = time.monotonic()
    ready, _, _ = select.select([fd_owner], [], [], timeout)
    return time.monotonic() - start if ready else None


@pytest.mark.parametrize("kind", ["epoll", "pipe"])
def test_wakeup_fd_becomes_readable_at_the_deadline_and_only_then(kind):
    """The watcher's fd: readable when its source is, or when an armed deadline passes (timerfd in
    an epoll on Linux; a timer thread writing into the backend's pipe elsewhere)."""
    from projectr.watch.base import drain_pipe, make_wake_pipe, wake
    from projectr.watch.wakeup import EpollWakeup, PipeWakeup
    r, w = make_wake_pipe()
    wakeup = EpollWakeup(r) if kind == "epoll" else PipeWakeup(r, w)
    try:
        assert _readable_after(wakeup, 0) is None
        wakeup.arm(0.1)
        waited = _readable_after(wakeup, 5)
        assert waited is not None and waited >= 0.05
        wakeup.clear()
        drain_pipe(r)
        assert _readable_after(wakeup, 0) is None  # a one-shot deadline
        wakeup.arm(0.1)
        wakeup.arm(0.3)  # re-arming replaces the deadline
        assert _readable_after(wakeup, 0.15) is None
        assert _readable_after(wakeup, 5) is not None
        wakeup.clear()
        drain_pipe(r)
        wakeup.arm(0.05)
        wakeup.disarm()
        assert _readable_after(wakeup, 0.2) is None
        wake(w)  # the source itself still wakes it
        assert _readable_after(wakeup, 1) is not None
    finally:
        wakeup.close()
        os.close(r)
        os.close(w)


def test_git_lock_hold_time(tmp_path):
    from projectr.watch import gitlock
    assert gitlock.held_for(None) is None and gitlock.held_for(str(tmp_path)) is None
    lock = tmp_path / "index.lock"
    lock.write_text("")
    assert gitlock.held_for(str(tmp_path)) == pytest.approx(gitlock.STALE_LOCK_SECONDS, abs=5)
    old = time.time() - gitlock.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    assert gitlock.held_for(str(tmp_path)) is None and not gitlock.is_locked(str(tmp_path))
