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
        try:
            os.killpg(master.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        master.wait(10)
