"""The thin-prefork spec, ported: addresses and ports, hooks in the right processes, commands, io handlers."""

from __future__ import annotations

import os

from tests.prefork.prefork_testutil import http_get, try_pid, wait_until


def test_answers_on_the_address_and_port_given(master):
    server = master("""
        Server(app, workers=1, host="127.0.0.1", port=PORT).start()
    """)
    server.wait_ready()
    status, _, body = http_get(server.port)
    assert status == 200 and int(body) != server.pid


def test_listens_on_ports_n_to_n_plus_j_minus_1_with_j_workers(master):
    server = master("""
        def ready(server):
            note("ports", json.dumps([w.port for w in server.workers]))
        Server(app, workers=3, host="127.0.0.1", port=PORT, when_ready=ready).start()
    """, ports=4)
    server.wait_ready()
    pids = [try_pid(server.port + offset) for offset in range(3)]
    assert all(pids) and len(set(pids)) == 3
    assert try_pid(server.port + 3, timeout=0.5) is None
    assert server.wait_file("ports") == [str([server.port, server.port + 1, server.port + 2])]


def test_on_register_runs_in_the_master_and_on_start_in_each_child(master):
    server = master("""
        class Hooks:
            def on_register(self):
                note("registered", f"{self.index} {os.getpid()}")
            def on_start(self):
                note("started", f"{self.index} {os.getpid()} {os.getppid()}")
        Server(app, workers=2, host="127.0.0.1", port=PORT, worker_mixins=[Hooks]).start()
    """, ports=2)
    server.wait_ready()
    registered = sorted(line.split() for line in server.read("registered"))
    assert registered == [["0", str(server.pid)], ["1", str(server.pid)]]
    started = sorted(line.split() for line in server.read("started"))
    assert [index for index, _, _ in started] == ["0", "1"]
    worker_pids = {try_pid(server.port), try_pid(server.port + 1)}
    assert {int(pid) for _, pid, _ in started} == worker_pids
    assert {int(parent) for _, _, parent in started} == {server.pid}


def test_a_mixed_in_command_runs_in_the_child_after_its_on_hook(master):
    server = master("""
        class Dump:
            def on_dump(self, *args):
                note("calls", f"on_dump {os.getpid()} {list(args)}")
            def child_dump(self, *args):
                note("calls", f"child_dump {os.getpid()} {list(args)}")
                return {"pid": os.getpid(), "args": list(args)}
        def ready(server):
            note("results", json.dumps(server.broadcast("dump", "a", 1)))
            server.workers[0].send_control_message("dump", "fire-and-forget")
        Server(app, workers=2, host="127.0.0.1", port=PORT, worker_mixins=[Dump], when_ready=ready).start()
    """, ports=2)
    server.wait_ready()
    results = {int(k): v for k, v in __import__("json").loads(server.wait_file("results")[0]).items()}
    worker_pids = [try_pid(server.port), try_pid(server.port + 1)]
    assert results == {0: {"pid": worker_pids[0], "args": ["a", 1]}, 1: {"pid": worker_pids[1], "args": ["a", 1]}}
    calls = server.wait_file("calls", lines=6)
    for pid in worker_pids:
        mine = [line.split(" ", 2) for line in calls if line.split()[1] == str(pid)]
        assert [name for name, _, _ in mine[:2]] == ["on_dump", "child_dump"]
    assert calls.count(f"on_dump {worker_pids[0]} ['fire-and-forget']") == 1
    assert calls.index(f"on_dump {worker_pids[0]} ['fire-and-forget']") < \
        calls.index(f"child_dump {worker_pids[0]} ['fire-and-forget']")


def test_add_io_handler_calls_back_in_the_master(master, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    server = master("""
        reader = open(os.path.join(HERE, "fifo"), "rb", buffering=0, opener=lambda p, f: os.open(p, f | os.O_NONBLOCK))
        keep = os.open(os.path.join(HERE, "fifo"), os.O_WRONLY)  # so EOF does not spin the loop
        def readable(io):
            note("io", f"{os.getpid()} {io.read().decode()}")
        server = Server(app, workers=1, host="127.0.0.1", port=PORT)
        server.add_io_handler(reader, readable)
        server.start()
    """)
    server.wait_ready()
    with open(fifo, "wb") as writer:
        writer.write(b"hello")
    assert server.wait_file("io") == [f"{server.pid} hello"]
