"""The master's side of the worker control channels: whole frames, buffered, written when writable.

A worker that does not read its channel (stopped here with SIGSTOP) must neither stall the master
loop (it used to send with a blocking sendall and a 1 s timeout) nor receive a cut frame (a timeout
left half a frame behind and desynchronised the channel); when too much piles up it is killed and
replaced. Real master, real workers, real signals.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from prefork.control import encode_frame, request
from prefork.ctl import call, socket_path
from tests.prefork.prefork_testutil import wait_until

ECHO_MASTER = """
class Echo:
    def child_echo(self, text):
        \"\"\"Answer the length of text.\"\"\"
        return len(text)
Server(app, workers=2, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid"),
       worker_mixins=[Echo]).start()
"""

BIG = "x" * 60_000  # one ctl request (< 64 KiB) that becomes a 60 KB frame to every worker


def push_echoes(path: str, connections: int) -> list[socket.socket]:
    """Open ``connections`` ctl clients, each pipelining 8 big echo commands (the in-flight limit)."""
    socks = []
    for _ in range(connections):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"".join(encode_frame(request(i, "command", ["echo", BIG])) for i in range(8)))
        socks.append(sock)
    return socks


def timed_help(path: str) -> float:
    start = time.monotonic()
    assert call(path, "help", timeout=10)
    return time.monotonic() - start


def slot_pids(path: str) -> dict[int, tuple[int, bool]]:
    return {row["slot"]: (row["pid"], row["ready"]) for row in call(path, "status", timeout=10)["workers"]}


def test_a_worker_that_does_not_read_its_channel_never_stalls_the_master(master, tmp_path: Path) -> None:
    running = master(ECHO_MASTER, ports=2)
    running.wait_ready()
    path = socket_path(tmp_path / "app.pid")
    victim, _ = slot_pids(path)[0]
    other, _ = slot_pids(path)[1]

    # 1. Below the limit: 24 x 60 KB queued for a stopped worker. The master keeps answering, and
    #    once the worker runs again it reads every frame whole: the channel is still in step.
    os.kill(victim, signal.SIGSTOP)
    socks = push_echoes(path, 3)
    try:
        worst = max(timed_help(path) for _ in range(10))
        assert worst < 0.3, f"help took {worst:.2f} s while a worker's channel was full"
    finally:
        os.kill(victim, signal.SIGCONT)
        for sock in socks:
            sock.close()
    answers = call(path, "command", "echo", "abc", timeout=10)
    assert answers == {"0": {"ok": True, "result": 3}, "1": {"ok": True, "result": 3}}
    assert slot_pids(path)[0][0] == victim
    assert "bad control frame" not in running.log()

    # 2. Over the limit (4 MiB unsent): the worker is killed and replaced, nothing else changes.
    os.kill(victim, signal.SIGSTOP)
    socks = push_echoes(path, 12)
    try:
        assert timed_help(path) < 0.3
        running.wait_log(rf"worker 0 \(pid {victim}, port {running.port}\) does not read its control channel "
                         r"\(\d+ bytes unsent\); killing it", timeout=5)
        overflowed = time.monotonic()
        wait_until(lambda: (lambda row: row[0] != victim and row[1])(slot_pids(path)[0]), timeout=5,
                   what="a ready replacement in slot 0")
        assert time.monotonic() - overflowed < 1.0
    finally:
        for sock in socks:
            sock.close()
    assert slot_pids(path)[1][0] == other
    answers = call(path, "command", "echo", "abcd", timeout=10)
    assert answers == {"0": {"ok": True, "result": 4}, "1": {"ok": True, "result": 4}}
    assert "Traceback" not in running.log()
