"""The load generator's own rules, against a loopback server that misbehaves on purpose.

A dropped keep-alive request used to be retried (and counted nowhere in the table) whether or not
the server had taken it in: a server that read a request and then hung up looked perfect. Now only
a request the server never read (its idle connection was closed before it came, or with it still
unread) is retried, and the retries are a column of their own.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.reliability.harness import Load, Result


class ScriptedServer:
    """HTTP/1.1 on 127.0.0.1: each connection answers ``serve`` requests (keep-alive), then:

    - ``close idle``: closes with the last answer, before the next request can arrive (corked:
      the answer and the FIN leave together, so the client cannot send before the close);
    - ``reset unread``: waits until the next request has arrived, then closes without reading it
      (a reset: what a server that closes idle connections does when a request lands just then);
    - ``drop``: reads the next request whole, then closes without answering.
    """

    def __init__(self, serve: int, then: str) -> None:
        self.serve, self.then = serve, then
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            for number in range(1, self.serve + 1):
                if not self._read_request(conn):
                    return
                if number == self.serve and self.then == "close idle":
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # held until close()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n1")
            if self.then == "drop":
                self._read_request(conn)
            elif self.then == "reset unread":
                conn.recv(1, socket.MSG_PEEK)  # the request is in our buffer, unread
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(serve: int, then: str) -> ScriptedServer:
        servers.append(ScriptedServer(serve, then))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run_load(port: int, requests: int) -> Load:
    with Load([port], clients=2, path="/", parse=int, timeout=5) as load:
        load.wait_requests(requests)
    return load


@pytest.mark.parametrize("then, how", [("close idle", ("RemoteDisconnected", "BrokenPipe")),
                                       ("reset unread", ("ConnectionResetError",))])
def test_a_request_the_server_never_read_is_retried_and_counted(scripted, then: str, how: tuple) -> None:
    server = scripted(serve=1, then=then)
    load = run_load(server.port, 10)
    assert load.failures == []
    assert load.retries >= 5  # every request after a connection's first was dropped unread
    assert all(not r.ok and any(kind in r.error for kind in how) for r in load.retried), \
        [r.error for r in load.retried[:3]]
    result = Result("scripted", "2 clients")
    result.count_load(load)
    assert (result.requests, result.failures, result.retried) == (load.count, 0, load.retries)
    assert f"| {load.retries} |" in result.row()


def test_a_request_the_server_had_accepted_then_dropped_is_a_failure(scripted) -> None:
    # The second request on each connection is read by the server (its TCP acknowledges it), and
    # the server hangs up without an answer: a retry would hide exactly the bug a reliability test
    # is for (the old harness retried it and reported nothing).
    server = scripted(serve=1, then="drop")
    load = run_load(server.port, 6)
    assert load.failures, "a dropped accepted request was not counted"
    assert all("after the server had accepted the request" in f.error for f in load.failures), \
        [f.error for f in load.failures[:3]]
    assert load.retries == 0
    result = Result("scripted", "2 clients")
    result.count_load(load)
    assert result.failures == len(load.failures) > 0 and "| 0 |" in result.row()
