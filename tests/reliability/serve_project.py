"""The server the reliability scenarios run: examples/server.py's program plus a worker start hook.

    python serve_project.py PROJECT_FILE --port P --workers N --pid FILE [--reload-timeout S]
        [--graceful-timeout S] [--upstream FILE --upstream-reload CMD] [--timeout S] [--hang-on-stop FILE]

Like examples/server.py it loads the project, serves ``myproject.app:application`` through
ProjectrServer and reloads on every change the project's watcher reports. The worker mixin
``StartHook`` calls ``myproject.settings.on_worker_start()`` when the project defines it, so a
scenario can make a worker's ``on_start`` fail by editing project code. The mixin ``StopHook``
makes ``on_stop`` hang for as long as the ``--hang-on-stop`` file exists. Like the ``prefork``
command line, it exits 1 when a stop had to SIGKILL a worker.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from projectr import Project  # noqa: E402

from prefork.server.projectr import ProjectrServer  # noqa: E402


class StartHook:
    """Worker mixin: run the project's ``settings.on_worker_start()`` in the worker (worker)."""

    def on_start(self) -> None:
        hook = getattr(importlib.import_module("myproject.settings"), "on_worker_start", None)
        if hook is not None:
            hook()
        super().on_start()  # type: ignore[misc]


def stop_hook(flag: str | None) -> type:
    """Worker mixin: ``on_stop`` hangs while ``flag`` exists (worker)."""

    class StopHook:
        def on_stop(self) -> None:
            while flag is not None and os.path.exists(flag):
                time.sleep(0.05)  # the hang a scenario asked for, until SIGKILL or the flag goes
            super().on_stop()  # type: ignore[misc]

    return StopHook


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("project")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pid", required=True)
    parser.add_argument("--reload-timeout", type=float, default=3.0)
    parser.add_argument("--graceful-timeout", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--upstream")
    parser.add_argument("--upstream-reload")
    parser.add_argument("--hang-on-stop", metavar="FILE", help="on_stop hangs while FILE exists")
    parser.add_argument("--upstream-server-options", default=None,
                        help="options of each server line (default: NginxUpstream's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")

    project = Project.from_file(args.project)
    project.load()
    hooks = {}
    if args.upstream:
        from prefork.upstream import NginxUpstream

        reload_command = shlex.split(args.upstream_reload) if args.upstream_reload else None
        options = {} if args.upstream_server_options is None else {"server_options": args.upstream_server_options}
        hooks = NginxUpstream(args.upstream, host="127.0.0.1", reload_command=reload_command, **options).hooks()
    mixins = [StartHook, stop_hook(args.hang_on_stop)]
    server = ProjectrServer(project=project, app="myproject.app:application", workers=args.workers,
                            host="127.0.0.1", port=args.port, pid_file=args.pid, worker_mixins=mixins,
                            reload_timeout=args.reload_timeout, graceful_timeout=args.graceful_timeout,
                            timeout=args.timeout, threads=args.threads, **hooks)
    server.watch(project.watch_changes())
    server.start()
    return 0 if server.stopped_cleanly else 1


if __name__ == "__main__":
    sys.exit(main())
