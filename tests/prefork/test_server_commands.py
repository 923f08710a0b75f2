"""Commands between master and workers: replies, errors, timeouts, bad control input."""

from __future__ import annotations

import json

from tests.prefork.prefork_testutil import http_get, try_pid

COMMANDS = """
    class Extra:
        def child_add(self, a, b):
            \"\"\"Add two numbers.\"\"\"
            return a + b
        def child_boom(self):
            raise ValueError("boom in the worker")
        def child_opaque(self):
            return object()
        def child_nap(self, seconds):
            time.sleep(seconds)
            return "awake"

    def outcome(function):
        try:
            return {"ok": function()}
        except CommandError as exc:
            return {"error": type(exc).__name__, "message": str(exc), "index": exc.index}

    def ready(server):
        worker = server.workers[0]
        results = {
            "add": outcome(lambda: worker.call("add", 2, 3)),
            "ping": outcome(lambda: worker.call("ping")),
            "stats": outcome(lambda: worker.call("stats")),
            "help": outcome(lambda: worker.call("help")),
            "unknown": outcome(lambda: worker.call("nope")),
            "boom": outcome(lambda: worker.call("boom")),
            "opaque": outcome(lambda: worker.call("opaque")),
            "bad_args": outcome(lambda: worker.call("add", 1)),
            "timeout": outcome(lambda: worker.call("nap", 1.0, timeout=0.2)),
            "after_timeout": outcome(lambda: worker.call("ping")),
            "unserialisable": outcome(lambda: worker.call("add", object(), 1)),
            "broadcast": {str(k): (v if not isinstance(v, CommandError) else "error: " + str(v))
                          for k, v in server.broadcast("add", 1, 1).items()},
            "broadcast_errors": {str(k): type(v).__name__ for k, v in server.broadcast("boom").items()},
        }
        note("results.json", json.dumps(results))

    Server(app, workers=2, host="127.0.0.1", port=PORT, worker_mixins=[Extra], when_ready=ready).start()
"""


def test_command_replies_and_errors(master):
    server = master(COMMANDS, ports=2)
    server.wait_ready()
    results = json.loads(server.wait_file("results.json")[0])
    worker_pid = try_pid(server.port)
    assert results["add"] == {"ok": 5}
    assert results["ping"] == {"ok": "pong"}
    stats = results["stats"]["ok"]
    assert stats["pid"] == worker_pid and stats["port"] == server.port and stats["index"] == 0
    assert {"started_at", "requests", "in_flight", "rss", "generation"} <= set(stats)
    assert stats["rss"] > 1_000_000 and stats["in_flight"] == 0
    assert results["help"]["ok"]["add"] == "Add two numbers."
    assert {"stop", "ping", "stats", "reopen_logs", "help", "add", "boom"} <= set(results["help"]["ok"])
    unknown = results["unknown"]
    assert unknown["error"] == "CommandError" and unknown["index"] == 0
    assert "unknown command 'nope'; known commands: add, boom, help, nap, opaque, ping" in unknown["message"]
    assert "ValueError: boom in the worker" in results["boom"]["message"]
    assert "not JSON-serialisable" in results["opaque"]["message"]
    assert "BadArguments: add:" in results["bad_args"]["message"]
    assert results["timeout"]["error"] == "CommandTimeout"
    assert results["after_timeout"] == {"ok": "pong"}
    assert results["unserialisable"]["error"] == "CommandError"
    assert results["broadcast"] == {"0": 2, "1": 2}
    assert results["broadcast_errors"] == {"0": "CommandError", "1": "CommandError"}
    # The errors were logged in the worker, which kept serving.
    assert "command boom failed: ValueError: boom in the worker" in server.log()
    # A sender's mistake is one line; a bug in the command gets its traceback.
    assert "command add failed: BadArguments" in server.log()
    assert server.log().count("Traceback") == server.log().count("command boom failed")
    assert http_get(server.port)[0] == 200


def test_stats_count_requests(master):
    server = master("""
        def ready(worker):
            pass
        Server(app, workers=1, host="127.0.0.1", port=PORT, pid_file=os.path.join(HERE, "app.pid")).start()
    """)
    server.wait_ready()
    for _ in range(3):
        http_get(server.port)
    from prefork.ctl import call, socket_path
    stats = call(socket_path(server.dir / "app.pid"), "stats", timeout=5)
    assert stats["0"]["result"]["requests"] == 3


def test_a_call_to_a_dead_worker_raises_worker_gone(master):
    server = master("""
        class Die:
            def child_die(self):
                os._exit(7)
        def ready(server):
            worker = server.workers[0]
            try:
                worker.call("die")
            except CommandError as exc:
                note("result", type(exc).__name__)
            try:
                worker.call("ping")
            except CommandError as exc:
                note("result", type(exc).__name__)
        Server(app, workers=1, host="127.0.0.1", port=PORT, worker_mixins=[Die], when_ready=ready).start()
    """)
    assert server.wait_file("result", lines=2) == ["WorkerGone", "WorkerGone"]
    server.wait_log(r"ready \(generation 0", count=2)  # replaced at once: it had been ready


BAD_INPUT = """
    import struct
    def frame(body):
        return struct.pack(">I", len(body)) + body
    def ready(server):
        worker = server.workers[0]
        raw = worker._control  # the master's end of the channel: send what no master would
        raw.setblocking(True)  # (the master's own sends are buffered and non-blocking)
        raw.sendall(frame(b"not json"))
        raw.sendall(frame(b"[1, 2]"))
        raw.sendall(frame(b'{"id": 99, "args": []}'))
        raw.sendall(frame(b'{"id": 98, "command": "ping", "args": {"a": 1}}'))
        raw.sendall(struct.pack(">I", (1 << 20) + 1) + b"x" * ((1 << 20) + 1))
        raw.sendall(frame(b'{"id": 97, "command": "../../etc", "args": []}'))
        raw.setblocking(False)
        note("after", json.dumps(worker.call("ping")))
    Server(app, workers=1, host="127.0.0.1", port=PORT, when_ready=ready).start()
"""


def test_bad_control_input_gets_error_replies_and_the_worker_keeps_serving(master):
    server = master(BAD_INPUT)
    assert server.wait_file("after") == ['"pong"']
    log = server.log()
    assert log.count("bad control frame") >= 3  # not JSON, not an object, oversized
    assert "frame is not UTF-8 JSON" in log and "exceeds the limit" in log
    assert "request has no 'command' string" in log and "'args' must be a JSON array" in log
    assert "unknown command '../../etc'" in log
    assert http_get(server.port)[0] == 200
    assert "died" not in log and "exited" not in log
