"""Every Python block of docs/prefork.md, run for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prefork.prefork_testutil import ROOT, http_get, port_block, wait_until

DOC = ROOT / "docs" / "prefork.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def run(tmp_path):
    procs = []

    def start(source: str, port: int) -> tuple[subprocess.Popen, Path]:
        script = tmp_path / f"doc{len(procs)}.py"
        script.write_text(source)
        out = tmp_path / f"doc{len(procs)}.out"
        env = dict(os.environ, PORT=str(port), PYTHONPATH=str(ROOT))
        with open(out, "wb") as handle:
            procs.append(subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=handle,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        return procs[-1], out

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def test_the_doc_has_the_blocks_this_test_runs():
    assert len(blocks()) == 2


def test_quick_start_block_serves_three_ports_and_answers_dump(run):
    port = port_block(3)
    proc, out = run(blocks()[0], port)
    line = wait_until(lambda: re.search(r"\{0: \{'pid': (\d+), 'args': \['now'\]\}.*\}", out.read_text()),
                      what="the broadcast printed by when_ready")
    bodies = [http_get(port + i)[2] for i in range(3)]
    assert all(body.startswith("hello from worker") for body in bodies)
    assert f"hello from worker {line.group(1)}\n" == bodies[0]
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 0


def test_hooks_block_reports_ready_exits_and_reloads(run):
    port = port_block(1)
    source = blocks()[1] + """
import os
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
MyServer(app, workers=1, host="127.0.0.1", port=int(os.environ["PORT"])).start()
"""
    proc, out = run(source, port)
    wait_until(lambda: f"worker 0 serving on port {port}" in out.read_text(), what="worker_ready")
    os.kill(proc.pid, signal.SIGHUP)
    wait_until(lambda: re.search(r"reload ok=True: 1 workers in \d+ ms", out.read_text()), what="roll_finished")
    wait_until(lambda: "worker 0 exited with 0" in out.read_text(), what="worker_exited")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "worker 0 exited with -15" in out.read_text()
