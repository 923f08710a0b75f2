"""An ASGI worker under a real master: lifespan, hooks, commands, graceful drain, rolling reloads.

The app is a raw ASGI callable (no framework): what it records (files named after the worker's pid)
is what the assertions read. Clients are real: httpx for HTTP, websockets for WebSockets.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from prefork.ctl.client import call
from tests.asgi.asgi_util import wait_for
from tests.prefork.prefork_testutil import process_gone

pytest.importorskip("uvicorn")

SERVER = '''
import asyncio, json, logging, os
from pathlib import Path

from prefork import Server
from prefork.livereload import LiveReloadWorker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
DIR = Path(os.environ["DIR"])
STATE = {{}}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if {fail_startup}:
                    await send({{"type": "lifespan.startup.failed", "message": "no database"}})
                    return
                await asyncio.sleep(0.2)  # a slow startup: ready must wait for it
                STATE["started"] = True
                (DIR / f"startup-{{os.getpid()}}").touch()
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                (DIR / f"shutdown-{{os.getpid()}}").touch()
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    elif scope["type"] == "http":
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"] or 1))
        body = json.dumps({{"pid": os.getpid(), "started": STATE.get("started", False),
                           "path": scope["path"]}}).encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]}})
        await send({{"type": "http.response.body", "body": body}})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({{"type": "websocket.accept"}})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({{"type": "websocket.send", "text": f"{{os.getpid()}}:{{message.get('text')}}"}})


class Hooks:
    def on_start(self):
        (DIR / f"on_start-{{os.getpid()}}").touch()

    def on_stop(self):
        (DIR / f"on_stop-{{os.getpid()}}").touch()

    def child_echo(self, *args):
        return {{"pid": os.getpid(), "args": list(args)}}

    def wrap_app(self, app):
        inner = super().wrap_app(app)

        async def wrapped(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/wrapped":
                await send({{"type": "http.response.start", "status": 200, "headers": []}})
                await send({{"type": "http.response.body", "body": b"wrapped"}})
                return
            await inner(scope, receive, send)
        return wrapped


Server(app, workers=int(os.environ["WORKERS"]), host="127.0.0.1", port=int(os.environ["PORT"]),
       pid_file=os.environ["PID_FILE"], graceful_timeout={graceful}, worker_mixins={mixins},
       access_log=str(DIR / "access.log")).start()
'''



def wait_generation(server, number: int) -> None:
    """Wait until every slot's current worker is of generation ``number`` or later (a roll completed)."""
    def done() -> bool:
        stats = call(server.ctl_path, "stats")
        return all(reply["ok"] and reply["result"]["generation"] >= number for reply in stats.values())
    wait_for(done, f"generation {number} serving")


def server_source(fail_startup: bool = False, graceful: float = 10.0, mixins: str = "[Hooks]") -> str:
    return SERVER.format(fail_startup=fail_startup, graceful=graceful, mixins=mixins)


def pid_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["pid"])


def test_lifespan_hooks_and_commands_in_an_asgi_worker(script_server):
    server = script_server(server_source())
    response = httpx.get(server.url("/"))
    pid = pid_of(response)
    assert response.json()["started"] is True  # lifespan startup ran before the worker said ready
    wait_for(lambda: re.search(r"all \d+ workers ready \(ASGI, uvicorn\)", server.log()), "the ready line")
    folder: Path = server.dir
    assert (folder / f"startup-{pid}").exists() and (folder / f"on_start-{pid}").exists()
    assert httpx.get(server.url("/wrapped")).text == "wrapped"  # the wrap_app hook wraps the ASGI app
    wait_for(lambda: '"GET /wrapped HTTP/1.1" 200 7' in (folder / "access.log").read_text(), "the access log line")

    stats = call(server.ctl_path, "stats")["0"]
    assert stats["ok"], stats
    assert stats["result"]["pid"] == pid and stats["result"]["interface"] == "asgi"
    assert stats["result"]["requests"] >= 2 and stats["result"]["draining"] is False
    echo = call(server.ctl_path, "command", "echo", "a", 1)["0"]
    assert echo == {"ok": True, "result": {"pid": pid, "args": ["a", 1]}}
    unknown = call(server.ctl_path, "command", "no_such_command")["0"]
    assert not unknown["ok"] and "no_such_command" in unknown["error"]

    server.signal(signal.SIGQUIT)  # graceful stop: drain, lifespan shutdown, on_stop, exit 0
    assert server.wait_exit() == 0
    assert (folder / f"shutdown-{pid}").exists() and (folder / f"on_stop-{pid}").exists()


def test_an_asgi_worker_exits_when_its_master_dies(script_server):
    server = script_server(server_source())
    pid = pid_of(httpx.get(server.url("/")))
    server.signal(signal.SIGKILL)
    wait_for(lambda: process_gone(pid), "the worker's exit after its master's death")


def test_failing_lifespan_startup_is_a_boot_failure_with_backoff(script_server):
    server = script_server(server_source(fail_startup=True), wait=False)
    server.wait_log(r"exited with status 3 before it was ready; retrying in", count=2)
    assert "all 1 workers ready" not in server.log()
    assert "lifespan startup failed" in server.log()
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url("/"), timeout=0.5)


def test_graceful_drain_finishes_a_slow_request_and_keeps_a_websocket_until_the_deadline(script_server):
    graceful = 3.0
    server = script_server(server_source(graceful=graceful))
    old_pid = pid_of(httpx.get(server.url("/")))
    with connect(server.url("/ws", scheme="ws"), open_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == f"{old_pid}:before"
        slow: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: slow.update(r=httpx.get(server.url("/slow") + "?1.5",
                                                                             timeout=10)))
        thread.start()
        wait_for(lambda: call(server.ctl_path, "stats")["0"]["result"]["in_flight"] >= 1, "the slow request")
        reloaded_at = time.monotonic()
        server.signal(signal.SIGHUP)
        wait_generation(server, 1)
        new_pid = pid_of(httpx.get(server.url("/")))
        assert new_pid != old_pid
        ws.send("during")  # the old worker drains, the WebSocket is still served by it
        assert ws.recv(timeout=5) == f"{old_pid}:during"
        thread.join(10)
        assert pid_of(slow["r"]) == old_pid  # the request in flight finished on the old worker
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=graceful + 5)
        waited = time.monotonic() - reloaded_at
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # "service restart"
    assert graceful - 1.5 < waited < graceful + 1.0, waited
    # Drained before the master's kill deadline: lifespan shutdown, on_stop, exit.
    wait_for(lambda: (server.dir / f"on_stop-{old_pid}").exists(), "on_stop of the old worker")
    wait_for(lambda: process_gone(old_pid), "the old worker's exit")
    assert (server.dir / f"shutdown-{old_pid}").exists()
    assert "did not stop in time" not in server.log()


def test_a_draining_worker_closes_idle_keep_alive_connections_and_answers_new_requests_with_close(script_server):
    """The drain reads uvicorn's own connection state: an idle connection is closed, a busy one is
    told ``Connection: close`` on the response to a request that arrived while draining."""
    server = script_server(server_source(graceful=10.0))
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.request("GET", "/")
    old_pid = pid_of_raw(idle.getresponse())
    busy_responses: list[tuple[int, str | None]] = []  # (pid, Connection header) on one connection
    errors: list[str] = []

    def keep_busy() -> None:  # one keep-alive connection, a request right after each response
        busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            while not busy_responses or busy_responses[-1][1] != "close":
                busy.request("GET", "/")
                response = busy.getresponse()
                busy_responses.append((pid_of_raw(response), response.getheader("connection")))
        except Exception as exc:  # noqa: BLE001 - a reset or a timeout is the failure this test is about
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            busy.close()

    slow: dict[str, httpx.Response] = {}  # keeps the old worker draining while the idle one is closed
    threads = [threading.Thread(target=lambda: slow.update(r=httpx.get(server.url("/slow") + "?4", timeout=10))),
               threading.Thread(target=keep_busy)]
    threads[0].start()  # the slow request first: in_flight counts the busy connection's requests too
    wait_for(lambda: call(server.ctl_path, "stats")["0"]["result"]["in_flight"] >= 1, "the slow request")
    threads[1].start()
    wait_for(lambda: len(busy_responses) >= 5, "the busy connection served")
    server.signal(signal.SIGHUP)
    assert idle.sock is not None
    idle.sock.settimeout(8)
    assert idle.sock.recv(1) == b"", "the idle keep-alive connection was not closed by the draining worker"
    assert "r" not in slow  # closed while the slow request was still running: not at the end of the drain
    for thread in threads:
        thread.join(10)
    idle.close()
    assert errors == []
    assert busy_responses[-1] == (old_pid, "close")  # served, then closed: the client reconnects elsewhere
    assert {pid for pid, _ in busy_responses} == {old_pid}
    assert pid_of(slow["r"]) == old_pid


def test_old_asgi_workers_close_idle_keep_alive_connections_one_slot_after_the_other(script_server):
    """As with WSGI workers (tests/prefork/test_server_reload.py): the connections of both old workers
    become closable at once (idle for IDLE_GRACE), yet once slot 0's is closed, slot 1's still
    answers, so that a proxy's retry of a request that met the closed one lands."""
    server = script_server(server_source(graceful=10.0), workers=2)
    conns = [http.client.HTTPConnection("127.0.0.1", server.port + i, timeout=10) for i in (0, 1)]
    old = []
    for conn in conns:
        conn.request("GET", "/")
        old.append(pid_of_raw(conn.getresponse()))
    server.signal(signal.SIGHUP)
    assert conns[0].sock is not None and conns[1].sock is not None
    conns[0].sock.settimeout(8)
    assert conns[0].sock.recv(1) == b"", "slot 0's old worker never closed its idle connection"
    conns[1].request("GET", "/")
    assert pid_of_raw(conns[1].getresponse()) == old[1]
    for conn in conns:
        conn.close()


def pid_of_raw(response: http.client.HTTPResponse) -> int:
    assert response.status == 200
    return int(json.loads(response.read())["pid"])


def test_rolling_reloads_under_keep_alive_load_fail_no_request(script_server):
    server = script_server(server_source(), workers=2)
    stop = threading.Event()
    results: list[tuple[int, int]] = []  # (worker index, pid)
    failures: list[str] = []

    def load(index: int, keep_alive: bool = True) -> None:
        # keep-alive: one connection, reused; else a new connection for every request
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=int(keep_alive))) as client:
            while not stop.is_set():
                try:
                    results.append((index, pid_of(client.get(server.url("/", worker=index)))))
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    failures.append(f"worker {index} ({'keep-alive' if keep_alive else 'new connections'}): "
                                    f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=args) for args in ((0,), (1,), (0,), (1,), (0, False), (1, False))]
    for thread in threads:
        thread.start()
    try:
        for count in (1, 2, 3):
            wait_for(lambda n=count: len(results) > 50 * n, "requests served between reloads")
            server.signal(signal.SIGHUP)
            wait_generation(server, count)
        # 2 workers x 4 generations served (the last ones too), then stop the load.
        wait_for(lambda: len({pid for _, pid in results}) >= 8, "requests served by the last generation")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert failures == []


def test_the_live_reload_worker_mixin_serves_an_asgi_app_through_the_asgi_middleware(script_server):
    server = script_server(server_source(mixins="[LiveReloadWorker, Hooks]"))
    assert httpx.get(server.url("/wrapped")).text == "wrapped"  # the other mixin's wrapper is kept
    assert httpx.get(server.url("/")).json()["started"] is True  # the lifespan still reaches the app
    status = httpx.get(server.url("/__prefork__/livereload")).json()
    assert status["generation"] == 0 and status["failure"] is None and status["stopping"] is False
    assert status["pid"] == call(server.ctl_path, "stats")["0"]["result"]["pid"]
