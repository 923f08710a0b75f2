"""The client side: ``call()`` and ``prefork ctl`` (run in the operator's process)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from prefork.control import (
    FrameError,
    FrameReader,
    recv_message,
    request,
    send_message,
)
from prefork.ctl.base import (
    EXIT_ERROR,
    EXIT_NO_MASTER,
    EXIT_OK,
    EXIT_USAGE,
    CtlError,
    CtlTimeout,
    ErrorReply,
    NoMasterError,
    socket_path,
)
from prefork.ctl.commands import COMMANDS

log = logging.getLogger("prefork.ctl")


def call(path: str | os.PathLike[str], command: str, *args: Any, timeout: float = 5.0) -> Any:
    """Send one command to the master listening on ``path``; return its result.

    Raises :class:`NoMasterError` when nothing listens there, :class:`CtlTimeout` when no reply
    arrives within ``timeout`` seconds, :class:`ErrorReply` when the master answers with an error.
    """
    path = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoMasterError(f"no master listening on {path}: {exc.strerror}") from exc
        except TimeoutError as exc:
            raise CtlTimeout(f"connecting to {path} timed out") from exc
        return _exchange(sock, path, command, list(args), timeout)
    finally:
        sock.close()


def _exchange(sock: socket.socket, path: str, command: str, args: list[Any], timeout: float) -> Any:
    try:
        try:
            send_message(sock, request(1, command, args))
        except (BrokenPipeError, ConnectionResetError):
            pass  # a master that refuses us replies at once and hangs up: its reply is still readable
        reply = recv_message(sock, FrameReader(), timeout)
    except TimeoutError as exc:
        raise CtlTimeout(f"no reply from {path} within {timeout} s") from exc
    except (EOFError, ConnectionError) as exc:
        raise CtlError(f"the master at {path} closed the connection: {exc}") from exc
    except FrameError as exc:
        raise CtlError(f"unreadable reply from {path}: {exc}") from exc
    if reply.get("ok") is True:
        return reply.get("result")
    raise ErrorReply(str(reply.get("error", "error reply without a message")))


def _human_seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    seconds = int(value)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _human_bytes(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


STATUS_COLUMNS = ("SLOT", "PID", "PORT", "GEN", "UPTIME", "SERVED", "INFLIGHT", "RSS")


def format_status(status: dict[str, Any]) -> str:
    """Render a ``status`` result as the table ``prefork ctl status`` prints."""
    rows: list[tuple[str, ...]] = [STATUS_COLUMNS]
    for w in status.get("workers", []):
        rows.append(
            tuple(
                "-" if v is None else str(v) for v in (w.get("slot"), w.get("pid"), w.get("port"), w.get("generation"))
            )
            + (
                _human_seconds(w.get("uptime")),
                "-" if w.get("served") is None else str(w["served"]),
                "-" if w.get("in_flight") is None else str(w["in_flight"]),
                _human_bytes(w.get("rss")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    header = f"master pid {status.get('master_pid')}, generation {status.get('generation')}, {len(rows) - 1} workers"
    return "\n".join([header, *lines])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork ctl",
        description="Talk to a running prefork master through its control socket (<pid file>.ctl).",
        epilog="Exit codes: 0 ok, 1 error reply, 2 usage, 3 no master.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", metavar="FILE", help="the master's pid file (the socket is FILE.ctl)")
    where.add_argument("--socket", metavar="PATH", help="the control socket itself")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help=COMMANDS["status"].help)
    sub.add_parser("stats", help=COMMANDS["stats"].help)
    reload = sub.add_parser("reload", help=COMMANDS["reload"].help)
    reload.add_argument(
        "--full", action="store_true", help="also replace the base: third-party modules are imported again (USR2)"
    )
    sub.add_parser("help", help="list the master's commands")
    workers = sub.add_parser("workers", help=COMMANDS["workers"].help)
    workers.add_argument("count", type=int, metavar="N")
    command = sub.add_parser("command", help=COMMANDS["command"].help)
    command.add_argument("name", metavar="NAME")
    command.add_argument("args", nargs="*", metavar="ARGS")
    return parser


def _request_args(options: argparse.Namespace) -> list[Any]:
    if options.command == "workers":
        return [options.count]
    if options.command == "command":
        return [options.name, *options.args]
    if options.command == "reload" and options.full:
        return ["--full"]
    return []


def _print_result(command: str, result: Any) -> int:
    if command == "status":
        print(format_status(result))
        return EXIT_OK
    if command == "help":
        for usage, text in result.items():
            print(f"{usage:<24} {text}")
        return EXIT_OK
    print(json.dumps(result, indent=2, sort_keys=True))
    if command == "command" and any(not r.get("ok", True) for r in result.values() if isinstance(r, dict)):
        return EXIT_ERROR  # some worker answered with an error
    return EXIT_OK


def ctl_main(argv: Sequence[str] | None = None) -> int:
    """Run ``prefork ctl`` with ``argv`` (the arguments after ``ctl``); return the exit code."""
    try:
        options = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    path = options.socket or socket_path(options.pid)
    try:
        result = call(path, options.command, *_request_args(options), timeout=options.timeout)
    except NoMasterError as exc:
        print(f"prefork ctl: {exc}", file=sys.stderr)
        return EXIT_NO_MASTER
    except CtlError as exc:
        print(f"prefork ctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _print_result(options.command, result)
