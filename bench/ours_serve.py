"""ours_serve.py: our server as the README runs it (issue 4's program), with bench flags.

Adds one log line when the watcher wakes the master, so the bench can split watcher wake-up
from the reload itself. Log lines carry the wall-clock time (`%(created)f`) for that split; prefork
logs at debug level (each reload's plan and each generation's report). The watcher's files are
handed to the server (`note_changes`, as `server.watch()` does), so a reload does not stat them all.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from prefork.server.projectr import ProjectrServer
from projectr import Project

log = logging.getLogger("bench.ours")


def _log_gc_pauses(threshold_ms: float = 5.0) -> None:
    """Log every collection in this process (the master) that takes longer than threshold_ms."""
    import gc

    started = [0.0]
    pid = os.getpid()

    def callback(phase: str, info: dict) -> None:
        if os.getpid() != pid:
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms >= threshold_ms:
            log.info("gc: generation %d collection took %.1f ms (%d collected)", info["generation"], ms,
                     info.get("collected", 0))

    gc.callbacks.append(callback)


def main() -> None:
    """Load the project, start ProjectrServer on a shared port, reload on every watched change."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", default="auto", help="watcher backend: auto, inotify, watchdog, polling")
    parser.add_argument("--no-reload", action="store_true")
    parser.add_argument("--no-partial", action="store_true", help="every code change: a fresh generation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(created).6f %(process)d %(name)s %(levelname)s %(message)s")
    logging.getLogger("prefork").setLevel(logging.DEBUG)
    if os.environ.get("BENCH_GC_LOG"):  # profiling aid: log the master's slow garbage collections
        _log_gc_pauses()
    project = Project.from_file(args.project)
    project.load()  # as the README's program does (the base then forgets the project's modules)
    extra = {"partial": False} if args.no_partial else {}
    server = ProjectrServer(project=project, app=args.app, workers=args.workers, host="127.0.0.1",
                            port=args.port, shared_port=True, stderr=sys.stderr, **extra)
    if not args.no_reload:
        watcher = project.watch_changes(backend=args.backend)

        def on_change(w) -> None:
            woke = time.time()
            changed = w.changed_files()
            log.info("watcher woke at %.6f: %d changed", woke, len(changed))
            if changed:
                server.note_changes(changed)
                server.reload()

        server.add_io_handler(watcher, on_change)
    signal.signal(signal.SIGHUP, lambda *_: server.reload())
    server.start()


if __name__ == "__main__":
    main()
