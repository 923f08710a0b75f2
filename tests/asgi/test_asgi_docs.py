"""Every code block of docs/asgi.md, run for real (the README's ASGI block is one of them)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.asgi.asgi_util import wait_for
from tests.realapps.harness import free_port_block

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asgi.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_the_blocks_this_test_runs():
    assert len(blocks("python")) == 1
    commands = [line.split("#")[0].strip() for line in blocks("sh")[0].splitlines()]
    # The install line is the extra pyproject.toml declares; the serve line is what tests/asgi/
    # test_asgi_fastapi.py runs on the generated FastAPI app (with --port-per-worker and --pid).
    assert commands == ["pip install 'projectr-prefork[asgi]'", "prefork main:app --reload -w 2"]
    assert "asgi = [" in (ROOT / "pyproject.toml").read_text()


def answer(url: str) -> dict | None:
    try:
        return httpx.get(url, timeout=2).json()
    except httpx.HTTPError:
        return None


def test_the_fastapi_server_block_serves_http_and_websockets(tmp_path):
    port = free_port_block(2)
    script = tmp_path / "server.py"
    script.write_text(blocks("python")[0])
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PORT=str(port), PYTHONPATH=str(ROOT)))
    try:
        bodies = [wait_for(lambda p=p: answer(f"http://127.0.0.1:{p}/"), f"port {p}") for p in (port, port + 1)]
        assert [body["hello"] for body in bodies] == ["from an ASGI worker"] * 2
        assert bodies[0]["pid"] != bodies[1]["pid"]
        with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as ws:
            ws.send("ping over a websocket")
            assert ws.recv(timeout=5) == "ping over a websocket"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
