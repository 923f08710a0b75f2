"""Resolving the WSGI application from ``"module:attr"`` or a callable (master, trial child)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

App = Callable[..., Any]


def resolve_app(spec: Any) -> Callable[..., Any]:
    """Return the WSGI callable for ``"module:attr"`` (from sys.modules as reloaded) or a callable.

    A callable passed directly is looked up again by its module and qualified name, so a function
    defined in a project module is served in its reloaded version; other callables are kept.
    """
    if callable(spec):
        return fresh_callable(spec)
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'app must be "module:attr", not {spec!r}')
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is a {type(target).__name__}, not a WSGI callable")
    app: Callable[..., Any] = target
    return app


def fresh_callable(app: Callable[..., Any]) -> Callable[..., Any]:
    """The current version of ``app`` in its (possibly reloaded) module, or ``app`` itself."""
    module = sys.modules.get(getattr(app, "__module__", None) or "")
    qualname = getattr(app, "__qualname__", "")
    if module is None or not qualname or "<" in qualname:
        return app
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return app
    return target if callable(target) else app
