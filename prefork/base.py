"""The base: a fork of the master that keeps the app's third-party imports warm (runs in the base).

The base never imports a project module. It learns what to import from generation 0 (the first
generation imports the app cold and reports the non-project modules it loaded), imports those in
the same order, each on its own (one that needs the app configured fails and is left to the
generations), and then forks every fresh generation: each starts with Django, SQLAlchemy, numpy...
already imported and shared copy-on-write, and pays only for the project's own modules.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import socket
import sys
import threading
import time
import warnings
from typing import Any, NoReturn

from prefork import forks, modules, stdio
from prefork.proctitle import set_title

log = logging.getLogger("prefork")


def run_base(server: Any, channel: socket.socket, master_pid: int, stale: list[str]) -> NoReturn:
    """Serve the master's requests (``preload``, ``fork_generation``) until it closes the channel.

    ``stale``: the project modules the master holds (a script that imported the app before
    start()): dropped, since generations forked from here must import each from its file.
    """
    code = 0
    try:
        forks.ignore_terminal_signals()
        if not forks.adopted(master_pid):  # a plain fork of the master: adopted from the start
            os._exit(0)
        stdio.redirect_stdio(server._output_fd)
        set_title("prefork base")
        modules.forget(stale)
        _serve(server, channel)
    except BaseException:  # noqa: BLE001 - the master sees EOF and starts another base
        log.exception("the base process failed")
        code = 1
    finally:
        os._exit(code)


def _serve(server: Any, channel: socket.socket) -> None:
    """Answer ``preload`` and ``fork_generation`` until the master closes the channel."""
    forks.serve_requests(
        channel,
        {
            "preload": lambda args, fds: _preload(
                channel, args["modules"], bool(args.get("final", True)), server.project.root
            ),
            "fork_generation": lambda args, fds: _fork_generation(server, channel, args, fds),
        },
    )


def _preload(channel: socket.socket, names: list[str], final: bool, root: str) -> None:
    """Import each module in order; report how many could be imported and how long it took.

    The master sends the modules in batches while generation 0 imports the app; ``final`` marks
    the last batch (sent with generation 0's report). A module whose import pulls in a project
    module (a third-party module that reads the app's settings at import time) is not kept.
    """
    started = time.perf_counter()
    resident = _resident_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fresh generation's own import shows the user its warnings
        for name in names:
            if name in sys.modules:
                continue
            where = modules.mark()
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - needs the app configured: left to the generations
                pass
            _keep_project_free(where, root)
    gc.freeze()  # shared by every generation and worker: keep the collector off these pages
    imported = sum(1 for name in names if name in sys.modules)
    if threading.active_count() > 1:  # forking a process with threads can deadlock its children
        log.warning(
            "base: importing the app's third-party modules started %d thread(s) (%s); generations "
            "fork from it all the same, but a lock held by such a thread at fork time stays held",
            threading.active_count() - 1,
            ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread()),
        )
    forks.send(
        channel,
        {
            "event": "preloaded",
            "final": final,
            "imported": imported,
            "wanted": len(names),
            "ms": (time.perf_counter() - started) * 1000.0,
            "mb": _resident_mb() - resident,
        },
    )


def _keep_project_free(where: modules.Mark, root: str) -> None:
    """Undo an import since ``where`` that brought a project module in, with everything it imported.

    The base never holds a project module: a generation must import each one from its file, and
    the third-party module that imported it must then be imported afresh too, or it would keep
    the old one.
    """
    added = modules.since(where)
    if added is None:  # the import removed modules: look at every one
        modules.forget(modules.of_project(root))
    elif any(modules.is_project_module(module, root) for _name, module in added):
        log.debug("base: not preloading %s: importing it imports the project", added[0][0])
        modules.forget([name for name, _module in added])


def _resident_mb() -> float:
    """This process's resident memory in MB (Linux), 0.0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576
    except (OSError, ValueError, IndexError):
        return 0.0


def _fork_generation(server: Any, channel: socket.socket, args: dict[str, Any], fds: list[int]) -> None:
    """Double-fork a fresh generation on the channel and dump pipe that came with the request."""
    gen_channel_fd, dump_fd = fds
    try:
        child = forks.spawn_adopted(args["master_pid"])  # it tells the master its pid itself
    except OSError:
        forks.close_fds(fds)  # the generation's channel sees EOF: the master gives it up
        return
    if child:
        from prefork.generation import run_generation

        forks.close_fds([channel.fileno()])
        run_generation(server, socket.socket(fileno=gen_channel_fd), dump_fd, args, None)
    forks.close_fds(fds)
