#!/usr/bin/env python
"""Serve examples/myproject with a few workers; save any of its files and every worker serves it.

    python examples/server.py [--port 8000] [--workers 2] [--host 127.0.0.1] [--pid FILE]

This is the program from the README, with flags. Edit examples/myproject/myproject/version.py
while it runs and reload the page: the version changes, the pid and generation too, and nothing
was dropped. `kill -HUP <master pid>` (or `prefork ctl --pid FILE reload`) reloads by hand.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from projectr import Project

from prefork.server.projectr import ProjectrServer

HERE = Path(__file__).resolve().parent
DEFAULT_PROJECT = HERE / "myproject" / "project.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The example's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", "-p", type=int, default=8000,
                        help="port of worker 0; worker i listens on PORT+i (default: 8000)")
    parser.add_argument("--workers", "-w", type=int, default=2, metavar="N", help="worker processes (default: 2)")
    parser.add_argument("--pid", metavar="FILE", help="pid file; enables `prefork ctl --pid FILE ...`")
    parser.add_argument("--partial", choices=("auto", "always", "never"), default="auto",
                        help="partial reloads: where cheaper than a fresh import (auto), always, or never")
    parser.add_argument("--reload-timeout", type=float, default=5.0, metavar="S",
                        help="abandon a reload whose imports take longer (default: 5 s)")
    parser.add_argument("--project", default=str(DEFAULT_PROJECT), metavar="FILE",
                        help="the project definition file (default: examples/myproject/project.py)")
    return parser.parse_args(argv)


def announce(server: ProjectrServer) -> None:
    """Print the URLs the workers serve (when_ready hook, runs in the master)."""
    for worker in sorted(server.workers, key=lambda w: w.index):
        print(f"worker {worker.index} (pid {worker.pid}): http://{server.host}:{worker.port}/", flush=True)
    print("edit a file under", Path(server.project.root), "and reload the page; Ctrl-C stops", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the example server until it is stopped."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    project = Project.from_file(args.project)
    sys.path.insert(0, project.root)  # worker_commands.py lives next to project.py
    from worker_commands import CatalogCommands

    server = ProjectrServer(project=project, app="myproject.app:application",
                            workers=args.workers, host=args.host, port=args.port,
                            pid_file=args.pid, worker_mixins=[CatalogCommands], when_ready=announce,
                            reload_timeout=args.reload_timeout, partial=args.partial)
    watcher = project.watch_changes()
    server.add_io_handler(watcher, lambda w: server.reload() if w.changed_files() else None)
    signal.signal(signal.SIGHUP, lambda *_: server.reload())
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
