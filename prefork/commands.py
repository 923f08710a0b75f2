"""The worker command registry: built-in commands, their help, and dispatch (runs in the worker).

A command ``foo`` sent by the master calls ``on_foo(*args)`` if the worker defines it, then
``child_foo(*args)``, whose return value (JSON-serialisable) is the reply. Mixins add commands by
defining ``child_<name>`` methods; the first line of the method's docstring is its help.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

BUILTINS: dict[str, str] = {
    "stop": "stop gracefully: stop accepting, finish in-flight requests, run on_stop, exit 0",
    "ping": "answer 'pong' (the master's hung-worker check)",
    "stats": "pid, index, port, generation, started_at, requests served and in flight, rss bytes",
    "reopen_logs": "reopen the stderr log file and logging's file handlers (after logrotate)",
    "help": "list the commands this worker knows, one line of help each",
}

# on_stop is the lifecycle hook that runs after the drain, not a notification before child_stop.
DEFERRED_NOTIFICATIONS = frozenset({"stop"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnknownCommand(LookupError):
    """The worker has no ``child_<name>`` method for a command."""


class BadArguments(TypeError):
    """The arguments do not fit the command's signature (the sender's mistake, not a bug)."""


def check_arguments(command: str, method: Callable[..., Any], args: list[Any]) -> None:
    """Raise BadArguments unless ``method`` accepts ``args``, before anything runs."""
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    try:
        signature.bind(*args)
    except TypeError as exc:
        raise BadArguments(f"{command}: {exc}") from None


def known_commands(worker: Any) -> dict[str, str]:
    """Return ``{name: one line of help}`` for every command ``worker`` answers."""
    commands: dict[str, str] = {}
    for attribute in sorted(dir(type(worker))):
        if not attribute.startswith("child_"):
            continue
        name = attribute[len("child_") :]
        if not callable(getattr(worker, attribute, None)):
            continue
        doc = (getattr(type(worker), attribute).__doc__ or "").strip().splitlines()
        commands[name] = BUILTINS.get(name) or (doc[0].strip() if doc else "")
    return commands


def run_command(worker: Any, command: str, args: list[Any]) -> Any:
    """Run ``command`` on ``worker``: ``on_<command>`` first if defined, then ``child_<command>``.

    Raises UnknownCommand (naming the known commands) when there is no ``child_<command>`` and
    BadArguments when ``args`` do not fit its signature; whatever the methods raise propagates to the
    caller, which turns it into an error reply.
    """
    method = getattr(worker, f"child_{command}", None) if _NAME.match(command) else None
    if not callable(method):
        known = ", ".join(known_commands(worker))
        raise UnknownCommand(f"unknown command {command!r}; known commands: {known}")
    check_arguments(command, method, args)
    notification = None if command in DEFERRED_NOTIFICATIONS else getattr(worker, f"on_{command}", None)
    if callable(notification):
        check_arguments(command, notification, args)
        notification(*args)
    return method(*args)
