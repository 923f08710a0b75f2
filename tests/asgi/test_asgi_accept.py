"""A shared address served by ASGI workers: a worker whose event loop is busy takes no new connection.

Real master, real sockets; the app blocks its event loop on a FIFO until the test opens it.
"""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from tests.asgi.asgi_util import wait_for
from tests.prefork.test_shared_port import release

pytest.importorskip("uvicorn")

SERVER = """
import logging, os
from pathlib import Path

from prefork import Server

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
DIR = Path(os.environ["DIR"])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/block":
        with open(DIR / "started", "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        with open(DIR / "release") as fifo:  # blocks the event loop: this worker is busy
            fifo.read()
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


Server(app, workers=2, host="127.0.0.1", port=int(os.environ["PORT"]), shared_port=True,
       pid_file=os.environ["PID_FILE"], graceful_timeout=5).start()
"""


def test_a_busy_asgi_worker_takes_no_connection_an_idle_one_could(script_server):
    server = script_server(SERVER, workers=2)
    os.mkfifo(server.dir / "release")
    blocked = threading.Thread(target=httpx.get, args=(server.url("/block"),), kwargs={"timeout": 30}, daemon=True)
    blocked.start()
    started = server.dir / "started"
    busy = int(wait_for(lambda: started.exists() and started.read_text().strip(), "the blocking request to start"))
    try:
        answered = []
        for _ in range(12):  # a fresh connection each
            try:
                answered.append(int(httpx.get(server.url("/"), timeout=5).text))
            except httpx.TimeoutException:
                answered.append(None)
    finally:
        release(server.dir / "release", [blocked])
    assert None not in answered, answered
    assert busy not in answered, answered
