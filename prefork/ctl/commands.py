"""The operator commands (``status``, ``stats``, ``reload``, ``workers``, ``command``, ``help``).

A registry with one line of help each. Run in the master.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefork.control import (
    FrameError,
    parse_request,
    reply_error,
    reply_ok,
)
from prefork.ctl.base import (
    COMMAND_TIMEOUT,
    MAX_WORKERS,
    STATS_TIMEOUT,
    BadRequest,
)

log = logging.getLogger("prefork.ctl")


@dataclass(frozen=True)
class Command:
    """One ctl command: its handler ``handler(server, args) -> JSON value`` and one line of help."""

    handler: Callable[[Any, list[Any]], Any]
    usage: str
    help: str


def _no_args(name: str, args: list[Any]) -> None:
    if args:
        raise BadRequest(f"{name} takes no arguments, got {len(args)}")


def _is_error(value: Any) -> bool:
    return isinstance(value, BaseException) or (isinstance(value, dict) and value.get("ok") is False)


def _error_text(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    return str(value.get("error", value))


def _jsonable(value: Any) -> Any:
    """Return ``value`` if it survives JSON encoding, else its repr (a worker may answer oddly)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _first(stats: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in stats:
            return stats[key]
    return None


def _uptime(started_at: Any) -> float | None:
    """Seconds since ``started_at`` (wall-clock epoch, or ``time.monotonic()`` if it is small)."""
    if not isinstance(started_at, (int, float)):
        return None
    now = time.time() if started_at > 1e9 else time.monotonic()
    return round(max(0.0, now - started_at), 3)


@dataclass(frozen=True)
class Deferred:
    """A command result that arrives later, so the master loop never waits on the workers.

    ``start(callback)`` begins the work and arranges for ``callback(raw)`` to run later in the
    master loop; ``finish(raw)`` turns ``raw`` into the reply's result.
    """

    start: Callable[[Callable[[Any], None]], None]
    finish: Callable[[Any], Any]


def _broadcast(
    server: Any, command: str, args: Sequence[Any], timeout: float, finish: Callable[[dict[int, Any]], Any]
) -> Any:
    """Run a worker command everywhere: without blocking when the server has ``broadcast_async``."""
    if hasattr(server, "broadcast_async"):
        return Deferred(
            lambda callback: server.broadcast_async(command, *args, timeout=timeout, callback=callback), finish
        )
    return finish(server.broadcast(command, *args, timeout=timeout))


def _stats_by_pid(results: dict[int, Any]) -> dict[int, Any]:
    return {v["pid"]: v for v in results.values() if isinstance(v, dict) and isinstance(v.get("pid"), int)}


def _worker_row(worker: Any, stats: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slot": worker.index,
        "pid": worker.pid,
        "port": worker.port,
        "generation": getattr(worker, "generation", None),
        "ready": bool(getattr(worker, "ready", False)),
        "uptime": _uptime(getattr(worker, "started_at", None)),
        "served": None,
        "in_flight": None,
        "rss": None,
    }
    if isinstance(stats, dict) and not _is_error(stats):
        row["served"] = _first(stats, "requests_served", "requests", "served")
        row["in_flight"] = _first(stats, "requests_in_flight", "in_flight")
        row["rss"] = _first(stats, "rss", "rss_bytes", "max_rss")
    elif stats is not None:
        row["error"] = _error_text(stats)
    return row


def cmd_status(server: Any, args: list[Any]) -> Any:
    """Master and per-worker status (one row per live worker)."""
    _no_args("status", args)
    asked = {id(w) for w in server.workers}  # the workers the broadcast asks

    def finish(results: dict[int, Any]) -> dict[str, Any]:
        by_pid = _stats_by_pid(results)
        # all_workers (prefork.Server) also lists a roll's successors and workers that are stopping.
        listed = getattr(server, "all_workers", None) or server.workers
        rows = []
        for worker in sorted(listed, key=lambda w: (w.index, getattr(w, "generation", 0) or 0)):
            stats = by_pid.get(worker.pid)
            if stats is None and id(worker) in asked:
                stats = results.get(worker.index)  # an error in place of stats carries no pid
            rows.append(_worker_row(worker, stats))
        return {"master_pid": os.getpid(), "generation": getattr(server, "generation", None), "workers": rows}

    return _broadcast(server, "stats", (), STATS_TIMEOUT, finish)


def _per_worker(results: dict[int, Any]) -> dict[str, Any]:
    """Turn broadcast results into JSON: ``{"0": {"ok": true, "result": ...}, ...}``."""
    out: dict[str, Any] = {}
    for index, value in sorted(results.items()):
        if _is_error(value):
            out[str(index)] = {"ok": False, "error": _error_text(value)}
        else:
            out[str(index)] = {"ok": True, "result": _jsonable(value)}
    return out


def cmd_stats(server: Any, args: list[Any]) -> Any:
    """Raw ``stats`` of every worker, keyed by slot."""
    _no_args("stats", args)
    return _broadcast(server, "stats", (), STATS_TIMEOUT, _per_worker)


def cmd_reload(server: Any, args: list[Any]) -> dict[str, Any]:
    """Ask the master for a rolling reload (as SIGHUP does); ``--full`` also renews the base (USR2)."""
    if args not in ([], ["--full"]):
        raise BadRequest(f"reload takes no arguments but --full, got {args!r}")
    if args:
        server.post_event("reload_full")
    else:
        server.reload()
    return {"reload": "full" if args else "requested", "generation": getattr(server, "generation", None)}


def _worker_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"workers N: N must be an integer, got {type(value).__name__}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise BadRequest(f"workers N: N must be an integer >= 0, got {value!r}")
        value = int(value)
    if not 0 <= value <= MAX_WORKERS:
        raise BadRequest(f"workers N: N must be between 0 and {MAX_WORKERS}, got {value}")
    return int(value)


def cmd_workers(server: Any, args: list[Any]) -> dict[str, Any]:
    """Set the number of worker slots (TTIN/TTOU for any N)."""
    if len(args) != 1:
        raise BadRequest(f"usage: workers N (one integer), got {len(args)} arguments")
    count = _worker_count(args[0])
    server.set_workers(count)
    return {"workers": count}


def cmd_command(server: Any, args: list[Any]) -> Any:
    """Send a worker command to every worker; reply per slot."""
    if not args or not isinstance(args[0], str) or not args[0]:
        raise BadRequest("usage: command NAME [ARGS...] (NAME a non-empty string)")
    return _broadcast(server, args[0], args[1:], COMMAND_TIMEOUT, _per_worker)


def cmd_help(server: Any, args: list[Any]) -> dict[str, str]:
    """One line of help per command."""
    return {c.usage: c.help for c in COMMANDS.values()}


COMMANDS: dict[str, Command] = {
    "status": Command(
        cmd_status, "status", "table of workers: slot, pid, port, generation, uptime, served, in flight, RSS"
    ),
    "stats": Command(cmd_stats, "stats", "raw stats of every worker as JSON, keyed by slot"),
    "reload": Command(
        cmd_reload,
        "reload [--full]",
        "rolling reload of every worker (like SIGHUP); --full also renews the base (like USR2)",
    ),
    "workers": Command(cmd_workers, "workers N", "set the number of worker slots to N >= 0"),
    "command": Command(cmd_command, "command NAME [ARGS...]", "send a worker command to every worker"),
    "help": Command(cmd_help, "help", "this list"),
}


def dispatch(server: Any, message: dict[str, Any], respond: Callable[[dict[str, Any]], None]) -> None:
    """Run one request against ``server`` and ``respond(reply)``, now or later. Runs in the master.

    Never raises: a bad request, a failing command or a bug in one becomes an error reply.
    """
    request_id = message.get("id")
    try:
        request_id, name, args = parse_request(message)
        command = COMMANDS.get(name)
        if command is None:
            raise BadRequest(f"unknown command {name[:64]!r}; commands: {', '.join(COMMANDS)}")
        outcome = command.handler(server, args)
        if isinstance(outcome, Deferred):
            outcome.start(lambda raw: respond(_finished(request_id, name, outcome.finish, raw)))
        else:
            respond(reply_ok(request_id, outcome))
    except (FrameError, BadRequest) as exc:
        respond(reply_error(request_id, str(exc)))
    except Exception as exc:  # a bug in a handler or the server must not take the master down
        log.exception("ctl command %r failed", message.get("command"))
        respond(reply_error(request_id, f"internal error: {type(exc).__name__}: {exc}"))


def _finished(request_id: Any, name: str, finish: Callable[[Any], Any], raw: Any) -> dict[str, Any]:
    try:
        return reply_ok(request_id, finish(raw))
    except Exception as exc:
        log.exception("ctl command %r failed", name)
        return reply_error(request_id, f"internal error: {type(exc).__name__}: {exc}")
