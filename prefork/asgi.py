"""Which interface an app speaks: ASGI (``scope, receive, send``) or WSGI (``environ, start_response``).

Runs wherever an app object is at hand: the master of a plain ``Server`` (to fail early and to
import the ASGI runtime once, before forking), a generation (same reason, for its workers and, by
learning, for the base) and each worker (to choose its runtime). Nothing here imports uvicorn.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from typing import Any

log = logging.getLogger("prefork.asgi")

INTERFACES = ("auto", "asgi", "wsgi")
INSTALL_HINT = "pip install 'projectr-prefork[asgi]'"


def check_interface(interface: str) -> str:
    """Return ``interface`` if it is one of ``auto``, ``asgi``, ``wsgi``; else raise ValueError."""
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, not {interface!r}")
    return interface


def detect_interface(app: Any) -> str:
    """``"asgi"`` for an async callable taking ``scope, receive, send`` (or an ASGI2 class), else ``"wsgi"``.

    The test is uvicorn's (a coroutine function, or an object whose ``__call__`` is one), plus one
    for wrappers that hide the coroutine (a plain callable that takes exactly three positional
    arguments cannot be a WSGI app, which takes two).
    """
    target = app.func if isinstance(app, functools.partial) else app
    if inspect.isclass(target):
        # An ASGI2 app is a class built from the scope whose instances are awaited with (receive, send).
        return "asgi" if hasattr(target, "__await__") or _is_async(_call_method(target)) else "wsgi"
    if _is_async(target) or _is_async(_call_method(target)):
        return "asgi"
    return "asgi" if _takes_exactly(app, 3) else "wsgi"


def choose_interface(app: Any, interface: str = "auto") -> str:
    """The interface to serve ``app`` with: ``interface`` unless it is ``"auto"``, then the detected one."""
    return detect_interface(app) if check_interface(interface) == "auto" else interface


def asgi_available() -> bool:
    """True when uvicorn (the optional ``asgi`` extra) is installed."""
    return importlib.util.find_spec("uvicorn") is not None


def require_runtime(app: Any, interface: str = "auto") -> str:
    """Choose the interface; for ASGI, import the worker runtime now (master or generation).

    Every worker forked afterwards inherits uvicorn already imported (80 ms less per worker boot),
    and a generation's import is what teaches the base to preload it. Raises RuntimeError when the
    app is ASGI and uvicorn is missing, so the error comes before any worker is forked.
    """
    chosen = choose_interface(app, interface)
    if chosen == "asgi":
        if not asgi_available():
            raise RuntimeError(f"{app!r} is an ASGI app: serving it needs uvicorn ({INSTALL_HINT})")
        import prefork.child_asgi  # noqa: F401  imported once here, shared by every fork
    return chosen


def _call_method(obj: Any) -> Any:
    """The function behind ``obj(...)`` for an instance (or behind ``instance(...)`` for a class)."""
    return inspect.getattr_static(obj, "__call__", None)


def _is_async(function: Any) -> bool:
    return function is not None and (
        inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(getattr(function, "__func__", None))
    )


def _takes_exactly(app: Any, count: int) -> bool:
    """True when ``app`` accepts ``count`` positional arguments and not ``count - 1``."""
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return False
    args = (None,) * count
    try:
        signature.bind(*args)
    except TypeError:
        return False
    try:
        signature.bind(*args[:-1])
    except TypeError:
        return True
    return False
