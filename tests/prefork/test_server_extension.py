"""Extension points for subclasses: events, timers, watched children, load_app, roll_workers."""

from __future__ import annotations

import json
import signal

from tests.prefork.prefork_testutil import try_pid, wait_until


def test_events_timers_and_watched_children(master):
    server = master("""
        class Custom(Server):
            def handle_greet(self, name):
                note("events", f"hello {name} in {os.getpid()}")

            def when_ready(self):
                self.post_event("greet", "world")
                dropped = self.call_later(0.1, lambda: note("timers", "cancelled timer ran"))
                dropped.cancel()
                self.call_later(0.2, lambda: note("timers", f"timer ran, generation {self.generation}"))
                pid = os.fork()
                if pid == 0:
                    os._exit(42)
                self.watch_child(pid, lambda status: note("children", f"{pid} exited {status}"))
                note("forked", pid)

        Custom(app, workers=1, host="127.0.0.1", port=PORT).start()
    """)
    server.wait_ready()
    assert server.wait_file("events") == [f"hello world in {server.pid}"]
    assert server.wait_file("timers") == ["timer ran, generation 0"]
    helper = server.wait_file("forked")[0]
    assert server.wait_file("children") == [f"{helper} exited 42"]
    assert "not a worker" not in server.log()


def test_a_subclass_reload_can_swap_the_app_and_roll(master, tmp_path):
    server = master("""
        def version(n):
            def app(environ, start_response):
                start_response("200 OK", [])
                return [str(n).encode()]
            return app

        class Versioned(Server):
            loads = 0

            def load_app(self):  # called by start() and by every reload
                self.loads += 1
                self.app = version(self.loads)
                return self.app

            def roll_finished(self, ok, info):
                note("rolls", json.dumps([ok, info["generation"], info["replaced"]]))

        Versioned(version(0), workers=2, host="127.0.0.1", port=PORT).start()
    """, ports=2)
    server.wait_ready()
    from tests.prefork.prefork_testutil import http_get
    assert http_get(server.port)[2] == "1"
    server.signal(signal.SIGHUP)
    assert json.loads(server.wait_file("rolls")[0]) == [True, 1, 2]
    # The predecessors stop accepting when they read their stop command, a moment after the roll.
    wait_until(lambda: [http_get(server.port + i)[2] for i in range(2)] == ["2", "2"],
               what="both ports served by the new generation")
