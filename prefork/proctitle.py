"""Process titles (``prefork master``, ``prefork worker 2 :8002``) when setproctitle is installed."""

from __future__ import annotations

from collections.abc import Callable

_setproctitle: Callable[[str], None] | None
try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:  # optional dependency: titles are a convenience
    _setproctitle = None


def set_title(title: str) -> bool:
    """Set this process's title; return False when setproctitle is not installed."""
    if _setproctitle is None:
        return False
    _setproctitle(title)
    return True
