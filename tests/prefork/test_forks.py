"""prefork.forks: a double-forked process that reports before its intermediate parent is gone.

Real processes: a subreaper "master" double-forks a child whose intermediate parent waits until
the child has called adopted(); only then does it exit and the master adopt the child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.prefork.prefork_testutil import ROOT, process_gone, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")

SCRIPT = textwrap.dedent(f"""
    import ctypes, json, os, signal, sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from prefork import forks

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: as the prefork master is
    master = os.getpid()
    called_r, called_w = os.pipe()  # the child has called adopted()
    out = sys.argv[1]

    def report(pid, error):  # runs in the intermediate process, which exits right after it
        os.read(called_r, 1)

    if forks.spawn_adopted(master, report):
        ok = forks.adopted(master, signal.SIGTERM)
        early = os.getppid() != master  # the intermediate still runs: adopted() did not wait
        os.write(called_w, b"x")
        sig = ctypes.c_int(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a poll with a deadline for the adoption to be seen
            libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
            if os.getppid() == master and sig.value == signal.SIGTERM:
                break
            time.sleep(0.01)
        with open(out + ".part", "w") as handle:
            json.dump({{"ok": ok, "early": early, "adopted": os.getppid() == master,
                       "signal": sig.value, "pid": os.getpid()}}, handle)
        os.rename(out + ".part", out)
        signal.pause()  # until the parent-death signal
    while True:
        try:
            os.waitpid(-1, 0)  # reap the intermediate; then wait to be killed
        except ChildProcessError:
            signal.pause()
""")


def test_a_child_that_reports_before_adoption_dies_by_its_signal_with_the_master(tmp_path: Path) -> None:
    out = tmp_path / "child.json"
    master = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], start_new_session=True)
    try:
        wait_until(out.exists, what="the child's report")
        report = json.loads(out.read_text())
        assert report["ok"] and report["early"], report  # it went on before its adoption
        assert report["adopted"] and report["signal"] == signal.SIGTERM, report  # then switched to its own signal
        master.kill()  # SIGKILL: no clean-up of the master's can stop the child
        master.wait(10)
        wait_until(lambda: process_gone(report["pid"]), what="the child to die with the master")
    finally:
        _kill_session(master)


SIBLING = textwrap.dedent(f"""
    import ctypes, json, os, random, signal, sys, threading, time
    sys.path.insert(0, {str(ROOT)!r})
    from prefork import forks

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: as the prefork master is
    master = os.getpid()
    out, threads = sys.argv[1], sys.argv[2] == "threads"

    def write(name, data):
        with open(out + name + ".part", "w") as handle:
            json.dump(data, handle)
        os.rename(out + name + ".part", out + name)

    if os.fork() == 0:  # the zygote (a generation, say): a child of the master
        if threads:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        zygote = os.getpid()

        def report(pid, error):
            write(".report", {{"reporter": os.getpid(), "pid": pid, "error": error}})

        if forks.spawn_adopted(master, report):
            born = os.getppid()
            ok = forks.adopted(master, signal.SIGTERM)
            sig = ctypes.c_int(0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # double-forked: the signal is switched once adopted
                libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
                if os.getppid() == master and sig.value == signal.SIGTERM:
                    break
                time.sleep(0.01)
            done = []
            thread = threading.Thread(target=done.append, args=(1,))
            thread.start()
            thread.join()
            write(".child", {{"born_parent": born, "ok": ok, "signal": sig.value, "pid": os.getpid(),
                             "thread_ran": done == [1], "random": random.random(), "zygote": zygote}})
            signal.pause()  # until the parent-death signal
        write(".zygote", {{"random": random.random()}})
        while True:
            signal.pause()
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            signal.pause()
""")


@pytest.mark.parametrize("threads", ["one thread", "threads"])
def test_a_zygote_forks_the_masters_child_directly_unless_it_runs_threads(tmp_path: Path, threads: str) -> None:
    """A single-threaded zygote forks a sibling (clone with CLONE_PARENT): a child of the master at
    once, no intermediate process; one running threads double-forks (glibc's fork() must take its
    locks). Either way the new process is a proper fork (its own random state, working threads)
    and dies by its signal with the master."""
    out = tmp_path / "out"
    master = subprocess.Popen([sys.executable, "-c", SIBLING, str(out), threads], start_new_session=True)
    try:
        child = json.loads(wait_until(lambda: _read(tmp_path / "out.child"), what="the child's report"))
        report = json.loads(wait_until(lambda: _read(tmp_path / "out.report"), what="the fork's report"))
        zygote = json.loads(wait_until(lambda: _read(tmp_path / "out.zygote"), what="the zygote's line"))
        assert child["ok"] and child["signal"] == signal.SIGTERM and child["thread_ran"], child
        assert report["pid"] == child["pid"] and report["error"] is None, report
        assert child["random"] != zygote["random"]  # the after-fork hooks ran in the child (random reseeded)
        if threads == "one thread":
            assert child["born_parent"] == master.pid and report["reporter"] == child["zygote"], (child, report)
        else:  # reported by an intermediate process (which may be gone before the child looks)
            assert report["reporter"] not in (master.pid, child["zygote"], child["pid"]), (child, report)
        master.kill()
        master.wait(10)
        wait_until(lambda: process_gone(child["pid"]), what="the child to die with the master")
    finally:
        _kill_session(master)


def _kill_session(master: subprocess.Popen) -> None:
    """Kill the test's master and everything in its session (the zygote, the child)."""
    try:
        os.killpg(master.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    master.wait(10)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
