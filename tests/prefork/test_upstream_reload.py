"""prefork.upstream's reload command in a real master: a child the loop watches, never waited for.

It used to run with subprocess.run(timeout=10) inside the worker_ready/worker_exited hooks, so a
slow `nginx -s reload` froze the master (signals, `prefork ctl`, dead workers) for up to 10 s per
change. No nginx needed: the reload commands here are small shell commands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefork.ctl import call, socket_path
from prefork.upstream import ports_in
from tests.integration.integration_util import free_ports  # below the ephemeral range: no client takes them
from tests.prefork.prefork_testutil import ROOT, wait_until


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append((int(entry), cmdline))
    return found


@pytest.fixture
def cli_master(tmp_path: Path):
    """Start ``python -m prefork app:app ...`` in its own session; killed by process group at teardown."""
    procs: list[subprocess.Popen] = []
    (tmp_path / "app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n")

    def start(*args: str) -> subprocess.Popen:
        log = open(tmp_path / "master.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "prefork", "app:app", *args], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the master, its workers and its reload command
        except ProcessLookupError:
            pass
        proc.wait(10)


def test_a_reload_command_that_sleeps_30_s_never_blocks_the_master(cli_master, tmp_path: Path) -> None:
    port = free_ports(2)
    upstream = tmp_path / "upstream.conf"
    master = cli_master("--workers", "2", "--host", "127.0.0.1", "--port", str(port),
                        "--pid", str(tmp_path / "app.pid"), "--upstream", str(upstream),
                        "--upstream-reload", "sleep 30")
    ctl = socket_path(tmp_path / "app.pid")
    # (30 s: the old master sat in a 10 s subprocess.run per change before writing the next list)
    def listed() -> bool:
        assert master.poll() is None, (tmp_path / "master.log").read_text()
        return upstream.exists() and ports_in(upstream.read_text()) == {port, port + 1}

    wait_until(listed, timeout=30, what="both ports in the upstream file")
    start = time.monotonic()
    workers = call(ctl, "status", timeout=5)["workers"]
    assert time.monotonic() - start < 1.0
    # one command runs (the first change); the second change is queued behind it, not run alongside
    assert [cmd for _, cmd in children(master.pid) if cmd.startswith("sleep")] == ["sleep 30"]

    victim = next(w["pid"] for w in workers if w["slot"] == 0)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()

    def replaced() -> bool:
        rows = call(ctl, "status", timeout=5)["workers"]
        return any(r["slot"] == 0 and r["pid"] != victim and r["ready"] for r in rows)

    wait_until(replaced, timeout=5, what="a replacement in slot 0")
    assert time.monotonic() - killed < 1.0
    start = time.monotonic()
    assert call(ctl, "help", timeout=5)
    assert time.monotonic() - start < 1.0
    assert master.poll() is None


COALESCE_MASTER = """
from prefork.upstream import NginxUpstream
up = NginxUpstream(os.path.join(HERE, "upstream.conf"), reload_command=["sh", os.path.join(HERE, "reload.sh")],
                   reload_timeout=60)
Server(app, workers=1, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid"),
       **up.hooks()).start()
"""

# The reload command under test: records the ports it sees, then holds until the test releases it.
RELOAD_SH = """\
here=$(dirname "$0")
echo "start $(grep -v down "$here/upstream.conf" | grep -o ':[0-9][0-9]*' | tr -d '\\n')" >> "$here/runs.log"
while [ ! -e "$here/release" ]; do sleep 0.01; done
echo end >> "$here/runs.log"
"""


def test_reload_runs_one_at_a_time_and_changes_meanwhile_coalesce(master, tmp_path: Path) -> None:
    (tmp_path / "reload.sh").write_text(RELOAD_SH)
    running = master(COALESCE_MASTER, ports=4)
    ctl = socket_path(tmp_path / "app.pid")
    runs = tmp_path / "runs.log"
    upstream = tmp_path / "upstream.conf"
    wait_until(lambda: runs.exists() and runs.read_text().count("start") == 1, what="the first run")
    # two more changes while the first run holds: both land in the file, one more run is queued
    call(ctl, "workers", 3)
    wait_until(lambda: ports_in(upstream.read_text()) == {running.port + i for i in range(3)}, what="3 ports")
    assert call(ctl, "help", timeout=5)  # the loop turned after the changes: nothing else started
    assert runs.read_text().splitlines() == [f"start :{running.port}"]
    assert len([cmd for _, cmd in children(running.pid) if "reload.sh" in cmd]) == 1

    (tmp_path / "release").write_text("")
    wait_until(lambda: runs.read_text().count("end") == 2, what="the queued run")
    # with nothing running, the next change runs at once
    call(ctl, "workers", 4)
    wait_until(lambda: runs.read_text().count("end") == 3, what="the run for the fourth port")
    ports = "".join(f":{running.port + i}" for i in range(3))
    assert runs.read_text().splitlines() == [
        f"start :{running.port}", "end", f"start {ports}", "end", f"start {ports}:{running.port + 3}", "end"]
    assert "WARNING prefork.upstream" not in running.log()  # every run exited 0
